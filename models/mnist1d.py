"""The four baselines of MNIST-1D (Greydanus & Kobak, ICML 2024), with the sizes of the paper's code.

Inputs are signals of 40 samples, shape (40,) (or any shape; it is flattened). Parameter counts on
10 classes: logistic regression 410, MLP 15,210, CNN 5,210, GRU 5,134; the paper reports test
accuracies of about 32, 68, 94 and 91 % with Adam (lr 1e-2), batch 100, 6000 steps
(`gin_configs/mnist1d/`). Kernels start from PyTorch's default initialization, uniform in
+-1/sqrt(fan_in), as the paper's models did (biases start at zero, Keras' default); the GRU keeps
Keras' initializers.
"""

from __future__ import annotations

import math
from typing import Sequence

import gin
import tensorflow as tf

from models import layers
from trainer.common import checks


def torch_default_initializer() -> tf.keras.initializers.Initializer:
  """PyTorch's default for Linear and Conv1d kernels: U(+-1/sqrt(fan_in)), i.e. variance 1 / (3 fan_in).

  A new instance per layer: Keras 2 gives every call of one unseeded instance the same values.
  """
  return tf.keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")


def _signal(owner: str, input_shape: Sequence[int], num_outputs: int, *, channel: bool):
  """(Input, the signal as (batch, length) or, with `channel`, (batch, length, 1)), shapes checked."""
  checks.integer(owner, "num_outputs", num_outputs, minimum=1)
  inputs = tf.keras.Input(shape=tuple(input_shape), name="signal")
  length = math.prod(inputs.shape[1:])
  return inputs, tf.keras.layers.Reshape((length, 1) if channel else (length,), name="flatten")(inputs)


def _logits(x, num_outputs: int):
  return layers.logits(x, num_outputs, kernel_initializer=torch_default_initializer())


@gin.configurable
def MNIST1DLogistic(*, input_shape: Sequence[int] = (40,), num_outputs: int = 10,
                    name: str = "mnist1d_logistic") -> tf.keras.Model:
  """Multinomial logistic regression: one linear layer on the raw signal (410 parameters)."""
  inputs, x = _signal("MNIST1DLogistic", input_shape, num_outputs, channel=False)
  return tf.keras.Model(inputs, _logits(x, num_outputs), name=name)


@gin.configurable
def MNIST1DMLP(*, input_shape: Sequence[int] = (40,), num_outputs: int = 10, hidden_size: int = 100,
               name: str = "mnist1d_mlp") -> tf.keras.Model:
  """h = relu(W1 x); h = h + relu(W2 h); logits = W3 h (15,210 parameters with hidden_size 100)."""
  owner = "MNIST1DMLP"
  hidden_size = checks.integer(owner, "hidden_size", hidden_size, minimum=1)
  inputs, x = _signal(owner, input_shape, num_outputs, channel=False)

  def dense(name):
    return tf.keras.layers.Dense(hidden_size, activation="relu", name=name,
                                 kernel_initializer=torch_default_initializer())

  h = dense("dense_a")(x)
  h = tf.keras.layers.Add(name="residual")([h, dense("dense_b")(h)])
  return tf.keras.Model(inputs, _logits(h, num_outputs), name=name)


@gin.configurable
def MNIST1DCNN(*, input_shape: Sequence[int] = (40,), num_outputs: int = 10, channels: int = 25,
               name: str = "mnist1d_cnn") -> tf.keras.Model:
  """Three ReLU convolutions (kernels 5, 3, 3; stride 2; one zero of padding each side), then linear.

  40 samples become 19, 10 and 5 positions: 5 x 25 features for the classifier (5,210 parameters).
  """
  owner = "MNIST1DCNN"
  channels = checks.integer(owner, "channels", channels, minimum=1)
  inputs, x = _signal(owner, input_shape, num_outputs, channel=True)
  for index, kernel_size in enumerate((5, 3, 3)):
    x = tf.keras.layers.ZeroPadding1D(1, name=f"conv{index}_pad")(x)
    x = tf.keras.layers.Conv1D(channels, kernel_size, strides=2, activation="relu", name=f"conv{index}",
                               kernel_initializer=torch_default_initializer())(x)
  x = tf.keras.layers.Flatten(name="features")(x)
  return tf.keras.Model(inputs, _logits(x, num_outputs), name=name)


@gin.configurable
def MNIST1DGRU(*, input_shape: Sequence[int] = (40,), num_outputs: int = 10, hidden_size: int = 6,
               name: str = "mnist1d_gru") -> tf.keras.Model:
  """A bidirectional GRU over the samples; all its outputs, flattened, feed a linear layer (5,134).

  Keras' GRU with `reset_after=True` (its default) is PyTorch's GRU: two bias vectors per gate.
  """
  owner = "MNIST1DGRU"
  hidden_size = checks.integer(owner, "hidden_size", hidden_size, minimum=1)
  inputs, x = _signal(owner, input_shape, num_outputs, channel=True)
  x = tf.keras.layers.Bidirectional(tf.keras.layers.GRU(hidden_size, return_sequences=True), name="gru")(x)
  x = tf.keras.layers.Flatten(name="features")(x)
  return tf.keras.Model(inputs, _logits(x, num_outputs), name=name)
