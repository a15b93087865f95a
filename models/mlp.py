"""A multilayer perceptron: the workhorse of regularization studies on small data."""

from __future__ import annotations

from typing import Sequence

import gin
import tensorflow as tf


@gin.configurable
def MLP(*, input_shape: Sequence[int] | None = None, hidden_sizes: Sequence[int] = (256, 256),
        num_outputs: int = 10, activation: str = "relu", dropout: float = 0.0, kernel_regularizer=None,
        name: str = "mlp") -> tf.keras.Model:
  """Flatten -> [Dense -> activation -> Dropout] * len(hidden_sizes) -> Dense(num_outputs) logits.

  `input_shape` is accepted like every model's (the shape of one example, from the data) but not
  needed: the MLP flattens whatever it is given and its layers are built by the first batch. Leaving
  it out of the model keeps its layers, and so the checkpoints of earlier runs, unchanged.

  `kernel_regularizer` exists so that a model can carry a layer-level penalty (the Keras way);
  Occam adds `model.losses` to the objective, see docs/REGULARIZATION.md.
  """
  if dropout < 0 or dropout >= 1:
    raise ValueError(f"MLP.dropout must be in [0, 1), got {dropout}")
  layers = [tf.keras.layers.Flatten(name="flatten")]
  for index, width in enumerate(hidden_sizes):
    layers.append(tf.keras.layers.Dense(width, activation=activation, kernel_regularizer=kernel_regularizer,
                                        name=f"dense_{index}"))
    if dropout:
      layers.append(tf.keras.layers.Dropout(dropout, name=f"dropout_{index}"))
  layers.append(tf.keras.layers.Dense(num_outputs, kernel_regularizer=kernel_regularizer, name="logits"))
  return tf.keras.Sequential(layers, name=name)
