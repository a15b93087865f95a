"""The CIFAR ResNets of He et al. (2016), "Deep Residual Learning for Image Recognition", Section 4.2.

ResNet-20/32/44/56/110 (depth 6n + 2): a 3x3 convolution with 16 filters, three stages of n basic
blocks (two 3x3 convolutions each, BatchNorm after every convolution, ReLU after the addition) with
16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps, global average pooling and the classifier.
"""

from __future__ import annotations

from typing import Sequence

import gin
import tensorflow as tf

from models import layers, stochastic_depth
from trainer.common import checks
from trainer.runtime import compat

WIDTHS = (16, 32, 64)
SHORTCUTS = ("A", "B")


class ZeroPadShortcut(tf.keras.layers.Layer):
  """He et al.'s option A: subsample by `strides` and zero-pad the extra channels (no parameters).

  The new channels are split evenly before and after the existing ones, as in the common PyTorch
  reference implementation of the CIFAR ResNets.
  """

  def __init__(self, filters: int, strides: int, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.strides = strides

  def call(self, inputs):
    subsampled = inputs[:, ::self.strides, ::self.strides, :]
    extra = self.filters - subsampled.shape[-1]
    return tf.pad(subsampled, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

  def get_config(self):
    return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@gin.configurable
def CifarResNet(*, input_shape: Sequence[int] = (32, 32, 3), num_outputs: int = 10, depth: int = 20,
                shortcut: str = "A", stochastic_depth_rate: float = 0.0,
                synchronized_batch_norm: bool = False, name: str = "cifar_resnet") -> tf.keras.Model:
  """He et al.'s CIFAR ResNet of `depth` = 6n + 2 layers (20, 32, 44, 56, 110, 1202).

  Args:
    input_shape, num_outputs: per-example image shape and number of classes (from the data).
    depth: 6n + 2 for n blocks per stage.
    shortcut: where the width doubles, 'A' (the paper's CIFAR choice: identity on a subsampled map with
      zero-padded new channels, no parameters; ResNet-20 has 269,722 parameters) or 'B' (a strided 1x1
      projection convolution with BatchNorm; 272,474 for ResNet-20).
    stochastic_depth_rate: drop probability of the last block (linear rule, see
      `models/stochastic_depth.py`); 0 disables it.
    synchronized_batch_norm: batch statistics over the global batch rather than each replica's.
  """
  owner = "CifarResNet"
  depth = checks.integer(owner, "depth", depth, minimum=8)
  if (depth - 2) % 6:
    raise ValueError(f"{owner}: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
  if shortcut not in SHORTCUTS:
    raise ValueError(f"{owner}: shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
  blocks_per_stage = (depth - 2) // 6
  rates = iter(stochastic_depth.linear_rates(stochastic_depth.check_rate(owner, stochastic_depth_rate),
                                             len(WIDTHS) * blocks_per_stage))
  inputs = layers.image_input(owner, input_shape, num_outputs)

  def bn(x, name):
    return compat.batch_normalization(synchronized=synchronized_batch_norm, name=name)(x)

  x = tf.keras.layers.ReLU(name="stem_relu")(bn(layers.conv2d(inputs, WIDTHS[0], 3, name="stem_conv"),
                                                 "stem_bn"))
  for stage, width in enumerate(WIDTHS):
    for block in range(blocks_per_stage):
      prefix = f"stage{stage}_block{block}"
      strides = 2 if stage > 0 and block == 0 else 1
      y = bn(layers.conv2d(x, width, 3, strides=strides, name=f"{prefix}_conv_a"), f"{prefix}_bn_a")
      y = tf.keras.layers.ReLU(name=f"{prefix}_relu_a")(y)
      y = bn(layers.conv2d(y, width, 3, name=f"{prefix}_conv_b"), f"{prefix}_bn_b")
      if strides != 1 or x.shape[-1] != width:
        if shortcut == "A":
          x = ZeroPadShortcut(width, strides, name=f"{prefix}_shortcut")(x)
        else:
          x = bn(layers.conv2d(x, width, 1, strides=strides, name=f"{prefix}_shortcut_conv"),
                 f"{prefix}_shortcut_bn")
      drop = stochastic_depth.drop_path(next(rates), rank=4, name=f"{prefix}_drop_path")
      x = stochastic_depth.residual_add(x, y, drop, name=f"{prefix}_add")
      x = tf.keras.layers.ReLU(name=f"{prefix}_relu")(x)
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return tf.keras.Model(inputs, layers.logits(x, num_outputs), name=name)
