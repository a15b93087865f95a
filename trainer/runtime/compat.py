"""The differences between Keras 2 (TF <= 2.15) and Keras 3 (TF >= 2.16), in one place.

Core code goes through `tf.keras`, which is Keras 2 on TF 2.15 and Keras 3 on TF 2.16+. The few places
where the two disagree (variable paths, optimizer building, the loss-scale API, the underlying
`tf.Variable` of a Keras variable) are answered here so that no other module needs to ask.
"""

from __future__ import annotations

import tensorflow as tf


def _keras_version() -> str:
  """The version of `tf.keras`: Keras 3 has `tf.keras.__version__`; Keras 2 (TF 2.15) only `keras`'s."""
  if hasattr(tf.keras, "__version__"):
    return tf.keras.__version__
  import keras
  return keras.__version__


KERAS_VERSION: str = _keras_version()
KERAS_MAJOR: int = int(KERAS_VERSION.split(".")[0])
IS_KERAS_3: bool = KERAS_MAJOR >= 3


def variable_path(variable) -> str:
  """A variable's unique, human-readable path, e.g. `mlp/dense_1/kernel`.

  Keras 3 names a kernel just `kernel` and keeps the layer path in `variable.path`; Keras 2 puts the
  scope in the name (`dense_1/kernel:0`). Both are normalized to a slash path without the `:0`.
  Keras 2 paths of a model's layers carry no model prefix (`dense_1/kernel`, Keras 3
  `mlp/dense_1/kernel`): match their tail.
  """
  path = getattr(variable, "path", None) or variable.name
  return path[:-2] if path.endswith(":0") else path


def tf_variable(variable) -> tf.Variable:
  """The `tf.Variable` (possibly a distributed one) that backs a Keras variable.

  Keras 3 wraps a `tf.Variable` in a `keras.Variable` (its `.value`); Keras 2 layers hold the
  `tf.Variable` itself. `tf.distribute` update machinery needs the real one.
  """
  if isinstance(variable, tf.Variable):
    return variable
  return variable.value


def build_optimizer(optimizer, variables) -> None:
  """Creates the optimizer's slot variables now, under the caller's strategy scope.

  Keras 3 creates slots lazily on the first `apply_gradients`; under MirroredStrategy that happens
  inside `strategy.run` in a `tf.function` and fails. Keras 2's new optimizers also have `build`;
  its legacy ones (`tf.keras.optimizers.legacy`, the base of tensorflow-addons' optimizers) create
  slots in `_create_all_weights`.
  """
  if hasattr(optimizer, "build"):
    optimizer.build(list(variables))
  elif hasattr(optimizer, "_create_all_weights"):
    optimizer._create_all_weights(list(variables))


def flatten_layers(model, *, include_self: bool = True) -> list:
  """The model and all its sublayers, recursively, each once (parents before children).

  Keras has no public walk over nested layers; `_flatten_layers` exists with these keywords on Keras 2
  and Keras 3 layers and models alike, so this is the one place that calls it.
  """
  return list(model._flatten_layers(include_self=include_self, recursive=True))


def normalization_layer_types() -> tuple[type, ...]:
  """The Keras normalization layer classes of the running Keras, for `isinstance` checks.

  Keras 3 has `RMSNormalization` and folds sync batch norm into `BatchNormalization`; Keras 2 has a
  separate `SyncBatchNormalization` and a v1 `BatchNormalization` class that is not the v2 one.
  """
  layers = tf.keras.layers
  names = ("BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
           "RMSNormalization")
  types = [getattr(layers, name) for name in names if hasattr(layers, name)]
  if not IS_KERAS_3:
    types.append(layers.experimental.SyncBatchNormalization)
    types.append(tf.compat.v1.keras.layers.BatchNormalization)
  return tuple(types)


def loss_scale_optimizer(optimizer):
  """Wraps `optimizer` for dynamic loss scaling (needed by the `mixed_float16` policy)."""
  if IS_KERAS_3:
    return tf.keras.optimizers.LossScaleOptimizer(optimizer)
  return tf.keras.mixed_precision.LossScaleOptimizer(optimizer)


def inner_optimizer(optimizer):
  """The optimizer a loss-scale wrapper (mixed_float16) wraps; any other optimizer itself."""
  return getattr(optimizer, "inner_optimizer", optimizer)


def is_loss_scale_optimizer(optimizer) -> bool:
  return hasattr(optimizer, "scale_loss") or hasattr(optimizer, "get_scaled_loss")


def scale_loss(optimizer, loss: tf.Tensor) -> tf.Tensor:
  """The loss to differentiate: multiplied by the current loss scale when the optimizer scales."""
  if hasattr(optimizer, "scale_loss"):  # Keras 3
    return optimizer.scale_loss(loss)
  if hasattr(optimizer, "get_scaled_loss"):  # Keras 2
    return optimizer.get_scaled_loss(loss)
  return loss


def unscale_gradients(optimizer, gradients: list) -> list:
  """Gradients ready for `apply_gradients`: Keras 2 unscales explicitly, Keras 3 inside `apply`."""
  if hasattr(optimizer, "get_unscaled_gradients"):
    return optimizer.get_unscaled_gradients(gradients)
  return gradients


def batch_normalization(*, synchronized: bool, name: str) -> tf.keras.layers.Layer:
  """BatchNorm whose batch statistics are per replica, or (synchronized) over the global batch.

  Keras 3 has a `synchronized` argument; Keras 2 has a separate `SyncBatchNormalization` layer.
  """
  if not synchronized:
    return tf.keras.layers.BatchNormalization(name=name)
  if IS_KERAS_3:
    return tf.keras.layers.BatchNormalization(synchronized=True, name=name)
  return tf.keras.layers.experimental.SyncBatchNormalization(name=name)
