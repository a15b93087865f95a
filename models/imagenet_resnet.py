"""ResNet-50/101/152 v1.5 for ImageNet (He et al., 2016, with the stride on the 3x3 convolution).

"v1.5" is the variant of torchvision, NVIDIA's and TensorFlow's reference trainers: a bottleneck block
that halves the resolution does so in its 3x3 convolution instead of its first 1x1 convolution (the
paper's v1), which costs no parameter and is slightly more accurate (about half a point of top-1 in
NVIDIA's measurements). Stem: a 7x7 stride-2 convolution with 64 filters, BN, ReLU and a 3x3 stride-2
max pool; then four stages of bottleneck blocks (1x1, 3x3, 1x1 convolutions, BN after each, ReLU
after the addition) with 64, 128, 256 and 512 inner filters and 4x as many outputs; projection
shortcuts (1x1 convolution + BN) where the shape changes.
"""

from __future__ import annotations

from typing import Sequence

import gin
import tensorflow as tf

from models import layers, stochastic_depth
from trainer.runtime import compat

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
EXPANSION = 4


@gin.configurable
def ImageNetResNet(*, input_shape: Sequence[int] = (224, 224, 3), num_outputs: int = 1000, depth: int = 50,
                   width: int = 64, stochastic_depth_rate: float = 0.0,
                   synchronized_batch_norm: bool = False, name: str = "imagenet_resnet") -> tf.keras.Model:
  """ResNet-`depth` v1.5 (25,557,032 parameters for ResNet-50 on 1000 classes).

  Args:
    input_shape, num_outputs: per-example image shape and number of classes (from the data).
    depth: 50, 101 or 152.
    width: inner filters of the first stage's blocks (64 in the paper; doubled at every stage).
    stochastic_depth_rate: drop probability of the last block (linear rule, see
      `models/stochastic_depth.py`); 0 disables it.
    synchronized_batch_norm: batch statistics over the global batch rather than each replica's.
  """
  owner = "ImageNetResNet"
  if depth not in BLOCKS_PER_STAGE:
    raise ValueError(f"{owner}: depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth!r}")
  stage_blocks = BLOCKS_PER_STAGE[depth]
  rates = iter(stochastic_depth.linear_rates(stochastic_depth.check_rate(owner, stochastic_depth_rate),
                                             sum(stage_blocks)))
  inputs = layers.image_input(owner, input_shape, num_outputs)

  def conv_bn(x, filters, kernel_size, name, strides=1):
    x = layers.conv2d(x, filters, kernel_size, strides=strides, name=f"{name}_conv")
    return compat.batch_normalization(synchronized=synchronized_batch_norm, name=f"{name}_bn")(x)

  x = tf.keras.layers.ReLU(name="stem_relu")(conv_bn(inputs, width, 7, "stem", strides=2))
  x = tf.keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
  x = tf.keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
  for stage, num_blocks in enumerate(stage_blocks):
    inner = width * 2**stage
    for block in range(num_blocks):
      prefix = f"stage{stage}_block{block}"
      strides = 2 if stage > 0 and block == 0 else 1
      y = tf.keras.layers.ReLU(name=f"{prefix}_relu_a")(conv_bn(x, inner, 1, f"{prefix}_a"))
      y = tf.keras.layers.ReLU(name=f"{prefix}_relu_b")(conv_bn(y, inner, 3, f"{prefix}_b", strides))
      y = conv_bn(y, EXPANSION * inner, 1, f"{prefix}_c")
      if block == 0:
        x = conv_bn(x, EXPANSION * inner, 1, f"{prefix}_shortcut", strides)
      drop = stochastic_depth.drop_path(next(rates), rank=4, name=f"{prefix}_drop_path")
      x = stochastic_depth.residual_add(x, y, drop, name=f"{prefix}_add")
      x = tf.keras.layers.ReLU(name=f"{prefix}_relu")(x)
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return tf.keras.Model(inputs, layers.logits(x, num_outputs), name=name)
