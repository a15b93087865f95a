"""Pre-activation ResNets (He et al., 2016, "Identity Mappings in Deep Residual Networks") for CIFAR.

PreAct ResNet-18/34 as trained in regularization papers on CIFAR: a 3x3 stem convolution with 64
filters (no pooling), four stages of basic blocks with 64, 128, 256 and 512 filters (strides 1, 2,
2, 2), each block BN-ReLU-conv3x3-BN-ReLU-conv3x3 with the identity added unchanged; where the
shape changes, a strided 1x1 projection of the pre-activated input is the shortcut. The Wide ResNets
(`models/wide_resnet.py`) are built from the same block.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import gin
import tensorflow as tf

from models import layers, stochastic_depth
from trainer.runtime import compat

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def bn_relu_factory(synchronized: bool) -> Callable:
  """`bn_relu(x, name)`: BatchNorm (`{name}_bn`) then ReLU (`{name}_relu`)."""
  def bn_relu(x, name: str):
    x = compat.batch_normalization(synchronized=synchronized, name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(name=f"{name}_relu")(x)
  return bn_relu


def preact_stages(x, *, stage_widths: Sequence[int], stage_blocks: Sequence[int],
                  stage_strides: Sequence[int], bn_relu: Callable, drop_rates: Iterator[float],
                  dropout: float = 0.0):
  """The residual stages of a pre-activation network; block b of stage s is named `stage{s}_block{b}`.

  Each block: a = BN-ReLU(x); y = conv3x3(BN-ReLU(conv3x3(a, stride))) with optional `dropout`
  between the two convolutions (Zagoruyko & Komodakis); x + y, where x becomes a strided 1x1
  projection of `a` when the shape changes. `drop_rates` yields each block's stochastic depth rate.
  """
  for stage, (filters, num_blocks, first_strides) in enumerate(zip(stage_widths, stage_blocks,
                                                                   stage_strides)):
    for block in range(num_blocks):
      prefix = f"stage{stage}_block{block}"
      strides = first_strides if block == 0 else 1
      activated = bn_relu(x, f"{prefix}_pre_a")
      y = layers.conv2d(activated, filters, 3, strides=strides, name=f"{prefix}_conv_a")
      y = bn_relu(y, f"{prefix}_pre_b")
      if dropout:
        y = tf.keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(y)
      y = layers.conv2d(y, filters, 3, name=f"{prefix}_conv_b")
      if strides != 1 or x.shape[-1] != filters:
        x = layers.conv2d(activated, filters, 1, strides=strides, name=f"{prefix}_shortcut_conv")
      drop = stochastic_depth.drop_path(next(drop_rates), rank=4, name=f"{prefix}_drop_path")
      x = stochastic_depth.residual_add(x, y, drop, name=f"{prefix}_add")
  return x


@gin.configurable
def PreActResNet(*, input_shape: Sequence[int] = (32, 32, 3), num_outputs: int = 10, depth: int = 18,
                 width: int = 64, final_activation: bool = True, stochastic_depth_rate: float = 0.0,
                 synchronized_batch_norm: bool = False, name: str = "preact_resnet") -> tf.keras.Model:
  """PreAct ResNet-`depth` (18 or 34) with stage widths width x (1, 2, 4, 8).

  Args:
    input_shape, num_outputs: per-example image shape and number of classes (from the data).
    depth: 18 (blocks 2, 2, 2, 2) or 34 (3, 4, 6, 3).
    width: filters of the stem and first stage (64 in the paper).
    final_activation: BN-ReLU after the last addition, as the paper prescribes for a pre-activation
      network (11,172,170 parameters for PreAct ResNet-18 on 10 classes). False omits it, as the
      widely copied PyTorch CIFAR code (and so many papers' "PreAct ResNet-18") does: 11,171,146.
    stochastic_depth_rate: drop probability of the last block (linear rule, see
      `models/stochastic_depth.py`); 0 disables it.
    synchronized_batch_norm: batch statistics over the global batch rather than each replica's.
  """
  owner = "PreActResNet"
  if depth not in BLOCKS_PER_STAGE:
    raise ValueError(f"{owner}: depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth!r}")
  stage_blocks = BLOCKS_PER_STAGE[depth]
  rate = stochastic_depth.check_rate(owner, stochastic_depth_rate)
  inputs = layers.image_input(owner, input_shape, num_outputs)
  bn_relu = bn_relu_factory(synchronized_batch_norm)
  x = layers.conv2d(inputs, width, 3, name="stem_conv")
  x = preact_stages(x, stage_widths=[width * 2**stage for stage in range(4)], stage_blocks=stage_blocks,
                    stage_strides=(1, 2, 2, 2), bn_relu=bn_relu,
                    drop_rates=iter(stochastic_depth.linear_rates(rate, sum(stage_blocks))))
  if final_activation:
    x = bn_relu(x, "final")
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return tf.keras.Model(inputs, layers.logits(x, num_outputs), name=name)
