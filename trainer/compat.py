"""The differences between Keras 2 (TF <= 2.15) and Keras 3 (TF >= 2.16), in one place.

Core code goes through `tf.keras`, which is Keras 2 on TF 2.15 and Keras 3 on TF 2.16+. The few places
where the two disagree (variable paths, optimizer building, the loss-scale API, the underlying
`tf.Variable` of a Keras variable) are answered here so that no other module needs to ask.
"""

from __future__ import annotations

import tensorflow as tf

KERAS_MAJOR: int = int(tf.keras.__version__.split(".")[0]) if hasattr(tf.keras, "__version__") else 2
IS_KERAS_3: bool = KERAS_MAJOR >= 3


def variable_path(variable) -> str:
  """A variable's unique, human-readable path, e.g. `mlp/dense_1/kernel`.

  Keras 3 names a kernel just `kernel` and keeps the layer path in `variable.path`; Keras 2 puts the
  scope in the name (`dense_1/kernel:0`). Both are normalized to a slash path without the `:0`.
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
  inside `strategy.run` in a `tf.function` and fails. Keras 2's new optimizers also have `build`.
  """
  if hasattr(optimizer, "build"):
    optimizer.build(list(variables))


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
