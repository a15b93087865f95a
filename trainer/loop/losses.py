"""Per-example losses and their matching accuracy, gin-selectable.

A loss maps (labels, outputs) to one value per example; the Trainer averages it over the *global*
batch with `tf.nn.compute_average_loss`, which is what keeps gradients replica-invariant. The same
loss (with its gin bindings, e.g. label smoothing) is what evaluation, the gap and the sharpness
probes measure.
"""

from __future__ import annotations

import gin
import tensorflow as tf

from trainer.common import checks


@gin.configurable
def softmax_cross_entropy(labels: tf.Tensor, logits: tf.Tensor, *, label_smoothing: float = 0.0) -> tf.Tensor:
  """Cross entropy between integer class labels and logits, per example (float32).

  With `label_smoothing = s` in [0, 1] the target is `(1 - s) * onehot(label) + s / K`, K the number
  of logits: Keras' `CategoricalCrossentropy(from_logits=True, label_smoothing=s)` on one-hot labels.
  Bind it as `softmax_cross_entropy.label_smoothing = 0.1`; evaluation reports the smoothed loss too
  (as Keras' `evaluate` does), so compare accuracies, not losses, across smoothing strengths.
  """
  labels, logits = tf.cast(labels, tf.int32), tf.cast(logits, tf.float32)
  if not label_smoothing:
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
  smoothing = checks.nonnegative("softmax_cross_entropy", "label_smoothing", label_smoothing)
  if smoothing > 1:
    raise ValueError(f"softmax_cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
  num_classes = tf.shape(logits)[-1]
  targets = tf.one_hot(labels, num_classes) * (1.0 - smoothing) + smoothing / tf.cast(num_classes, tf.float32)
  return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


@gin.configurable
def mean_squared_error(labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
  """Squared error averaged over the output dimensions, per example (float32)."""
  error = tf.cast(outputs, tf.float32) - tf.cast(labels, tf.float32)
  return tf.reduce_mean(tf.reshape(tf.square(error), [tf.shape(error)[0], -1]), axis=1)


def hparams(loss_fn) -> dict[str, str | float]:
  """What HParams reports about `loss_fn`: its name and `label_smoothing` (0.0 when it has none).

  A loss is a gin-configurable function called with its bindings, so its settings are read where they
  were set: gin's bindings of that configurable (none for a loss bound from Python).
  """
  name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
  try:
    bound = gin.get_bindings(name)
  except (ValueError, KeyError):  # not a registered configurable
    bound = {}
  return {"loss": name, "label_smoothing": float(bound.get("label_smoothing", 0.0))}
