"""A small ResNet-style CNN with BatchNorm, sized for 8x8 digits.

It exists so that the normalization-parameter exclusion and inference-mode evaluation (BatchNorm
moving statistics) are exercised by a real model.
"""

from __future__ import annotations

import gin
import tensorflow as tf

from trainer.runtime import compat


def _conv_bn(filters: int, name: str, synchronized: bool, strides: int = 1) -> list[tf.keras.layers.Layer]:
  return [
      tf.keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                             name=f"{name}_conv"),
      compat.batch_normalization(synchronized=synchronized, name=f"{name}_bn"),
  ]


def _apply(layers: list[tf.keras.layers.Layer], x):
  for layer in layers:
    x = layer(x)
  return x


@gin.configurable
def ResNet(*, input_shape=(8, 8, 1), num_outputs: int = 10, widths=(16, 32), blocks_per_stage: int = 1,
           synchronized_batch_norm: bool = False, name: str = "resnet") -> tf.keras.Model:
  """Stem conv, then per stage `blocks_per_stage` residual blocks (post-activation), global pool, logits.

  The first block of every stage after the first halves the resolution (stride 2) and uses a 1x1
  projection shortcut. BatchNorm normalizes with each replica's own batch statistics, so results
  depend on the replica count; `synchronized_batch_norm=True` uses the global batch's statistics
  (one extra all-reduce per BatchNorm layer) and makes training replica-invariant.
  """
  inputs = tf.keras.Input(shape=tuple(input_shape), name="image")
  x = tf.keras.layers.ReLU()(_apply(_conv_bn(widths[0], "stem", synchronized_batch_norm), inputs))
  for stage, width in enumerate(widths):
    for block in range(blocks_per_stage):
      strides = 2 if stage > 0 and block == 0 else 1
      prefix = f"stage{stage}_block{block}"
      y = tf.keras.layers.ReLU()(_apply(_conv_bn(width, f"{prefix}_a", synchronized_batch_norm, strides), x))
      y = _apply(_conv_bn(width, f"{prefix}_b", synchronized_batch_norm), y)
      if strides != 1 or x.shape[-1] != width:
        x = tf.keras.layers.Conv2D(width, 1, strides=strides, use_bias=False, name=f"{prefix}_proj")(x)
      x = tf.keras.layers.ReLU()(tf.keras.layers.Add()([x, y]))
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  outputs = tf.keras.layers.Dense(num_outputs, name="logits")(x)
  return tf.keras.Model(inputs, outputs, name=name)
