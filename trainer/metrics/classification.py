"""Classification accuracy, per example: what `train/`, `eval/` and `train_eval/accuracy` average."""

from __future__ import annotations

import tensorflow as tf


def correct_predictions(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """1.0 where argmax(logits) equals the integer label, else 0.0, per example."""
  predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
  return tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32)
