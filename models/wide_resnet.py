"""Wide Residual Networks (Zagoruyko & Komodakis, 2016) for CIFAR: WRN-depth-k, e.g. WRN-28-10.

A 3x3 stem convolution with 16 filters, three stages of (depth - 4) / 6 pre-activation basic blocks
with 16k, 32k and 64k filters (strides 1, 2, 2), optional dropout between the two convolutions of
every block, a final BN-ReLU, global average pooling and the classifier.
"""

from __future__ import annotations

from typing import Sequence

import gin
import tensorflow as tf

from models import layers, preact_resnet, stochastic_depth
from trainer.common import checks


@gin.configurable
def WideResNet(*, input_shape: Sequence[int] = (32, 32, 3), num_outputs: int = 10, depth: int = 28,
               width: int = 10, dropout: float = 0.0, stochastic_depth_rate: float = 0.0,
               synchronized_batch_norm: bool = False, name: str = "wide_resnet") -> tf.keras.Model:
  """WRN-`depth`-`width` (36,479,194 parameters for WRN-28-10 on 10 classes).

  Args:
    input_shape, num_outputs: per-example image shape and number of classes (from the data).
    depth: 6n + 4 for n blocks per stage (28, 16, 40, ...).
    width: the widening factor k.
    dropout: dropout rate between the two convolutions of each block (the paper uses 0.3).
    stochastic_depth_rate: drop probability of the last block (linear rule, see
      `models/stochastic_depth.py`); 0 disables it.
    synchronized_batch_norm: batch statistics over the global batch rather than each replica's.
  """
  owner = "WideResNet"
  depth = checks.integer(owner, "depth", depth, minimum=10)
  if (depth - 4) % 6:
    raise ValueError(f"{owner}: depth must be 6n + 4 with n >= 1 (16, 28, 40), got {depth!r}")
  if not 0 <= dropout < 1:
    raise ValueError(f"{owner}: dropout must be in [0, 1), got {dropout!r}")
  blocks = (depth - 4) // 6
  rate = stochastic_depth.check_rate(owner, stochastic_depth_rate)
  inputs = layers.image_input(owner, input_shape, num_outputs)
  bn_relu = preact_resnet.bn_relu_factory(synchronized_batch_norm)
  x = layers.conv2d(inputs, 16, 3, name="stem_conv")
  x = preact_resnet.preact_stages(
      x, stage_widths=(16 * width, 32 * width, 64 * width), stage_blocks=(blocks,) * 3,
      stage_strides=(1, 2, 2), bn_relu=bn_relu, dropout=dropout,
      drop_rates=iter(stochastic_depth.linear_rates(rate, 3 * blocks)))
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(bn_relu(x, "final"))
  return tf.keras.Model(inputs, layers.logits(x, num_outputs), name=name)
