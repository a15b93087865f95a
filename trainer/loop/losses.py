"""Per-example losses and their matching accuracy, gin-selectable.

A loss maps (labels, outputs) to one value per example; the Trainer averages it over the *global*
batch with `tf.nn.compute_average_loss`, which is what keeps gradients replica-invariant.
"""

from __future__ import annotations

import gin
import tensorflow as tf


@gin.configurable
def softmax_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Cross entropy between integer class labels and logits, per example (float32)."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                        logits=tf.cast(logits, tf.float32))


@gin.configurable
def mean_squared_error(labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
  """Squared error averaged over the output dimensions, per example (float32)."""
  error = tf.cast(outputs, tf.float32) - tf.cast(labels, tf.float32)
  return tf.reduce_mean(tf.reshape(tf.square(error), [tf.shape(error)[0], -1]), axis=1)
