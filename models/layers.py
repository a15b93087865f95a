"""Building blocks shared by the image models: convolutions padded as in the papers, float32 logits.

Kept as functions over Keras tensors (not layers of their own), so that every model is a plain
functional `tf.keras.Model` whose layers and variables carry readable names.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from trainer.common import checks

# He et al. (2015) initialization for ReLU networks, as in the ResNet and Wide ResNet papers.
CONV_INITIALIZER = "he_normal"


def conv2d(x, filters: int, kernel_size: int, *, strides: int = 1, name: str):
  """A bias-free convolution whose strided form pads symmetrically, as Caffe, Torch and PyTorch do.

  Keras' 'same' padding puts the odd pixel of a stride-2 convolution on the bottom/right, which
  shifts the sampling grid by one pixel against a strided shortcut; explicit (k - 1) / 2 zeros on
  every side keep the two aligned. Stride-1 convolutions use 'same', which is then symmetric.
  """
  padding = "same" if strides == 1 else "valid"
  if strides > 1 and kernel_size > 1:
    x = tf.keras.layers.ZeroPadding2D((kernel_size - 1) // 2, name=f"{name}_pad")(x)
  return tf.keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                                kernel_initializer=CONV_INITIALIZER, name=name)(x)


def logits(x, num_outputs: int, *, name: str = "logits", kernel_initializer="glorot_uniform"):
  """The output layer, computed in float32 whatever the precision policy (bfloat16-safe logits)."""
  return tf.keras.layers.Dense(num_outputs, kernel_initializer=kernel_initializer, dtype="float32",
                               name=name)(x)


def image_input(owner: str, input_shape: Sequence[int], num_outputs: int):
  """The `tf.keras.Input` for per-example `input_shape` (height, width, channels), checked."""
  shape = tuple(input_shape)
  if len(shape) != 3:
    raise ValueError(f"{owner}: input_shape must be (height, width, channels), got {shape}")
  checks.integer(owner, "num_outputs", num_outputs, minimum=1)
  return tf.keras.Input(shape=shape, name="image")
