"""A small ResNet-style CNN with BatchNorm, sized for 8x8 digits.

It exists so that the normalization-parameter exclusion and inference-mode evaluation (BatchNorm
moving statistics) are exercised by a real model.
"""

from __future__ import annotations

import gin
import tensorflow as tf


def _conv_bn(filters: int, name: str, strides: int = 1) -> list[tf.keras.layers.Layer]:
  return [
      tf.keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"),
      tf.keras.layers.BatchNormalization(name=f"{name}_bn"),
  ]


def _apply(layers: list[tf.keras.layers.Layer], x):
  for layer in layers:
    x = layer(x)
  return x


@gin.configurable
def ResNet(*, input_shape=(8, 8, 1), num_outputs: int = 10, widths=(16, 32), blocks_per_stage: int = 1,
           name: str = "resnet") -> tf.keras.Model:
  """Stem conv, then per stage `blocks_per_stage` pre-activation-free residual blocks, global pool, logits.

  The first block of every stage after the first halves the resolution (stride 2) and uses a 1x1
  projection shortcut.
  """
  inputs = tf.keras.Input(shape=tuple(input_shape), name="image")
  x = tf.keras.layers.ReLU()(_apply(_conv_bn(widths[0], "stem"), inputs))
  for stage, width in enumerate(widths):
    for block in range(blocks_per_stage):
      strides = 2 if stage > 0 and block == 0 else 1
      prefix = f"stage{stage}_block{block}"
      y = tf.keras.layers.ReLU()(_apply(_conv_bn(width, f"{prefix}_a", strides), x))
      y = _apply(_conv_bn(width, f"{prefix}_b"), y)
      if strides != 1 or x.shape[-1] != width:
        x = tf.keras.layers.Conv2D(width, 1, strides=strides, use_bias=False, name=f"{prefix}_proj")(x)
      x = tf.keras.layers.ReLU()(tf.keras.layers.Add()([x, y]))
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  outputs = tf.keras.layers.Dense(num_outputs, name="logits")(x)
  return tf.keras.Model(inputs, outputs, name=name)
