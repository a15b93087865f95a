"""Vision Transformers (Dosovitskiy et al., 2021): ViT-Ti/16, ViT-S/16, ViT-B/16 and other patch sizes.

The image is cut into patch_size x patch_size patches, each linearly embedded (a strided convolution);
a learned class token is prepended and learned position embeddings added; then `depth` pre-norm
encoder blocks (LayerNorm -> multi-head self-attention -> residual, LayerNorm -> MLP with GELU ->
residual), a final LayerNorm and a linear head on the class token. Widths, depths, heads and MLP
sizes of the variants are those of Touvron et al. (2021, Ti and S) and Dosovitskiy et al. (B).
Initialization follows the original implementation: class token and head kernel zero, position
embeddings normal with standard deviation 0.02, LayerNorm epsilon 1e-6.
"""

from __future__ import annotations

from typing import Sequence

import gin
import tensorflow as tf

from models import layers, stochastic_depth
from trainer.common import checks

# variant -> (width, depth, heads, MLP width)
VARIANTS = {"Ti": (192, 12, 3, 768), "S": (384, 12, 6, 1536), "B": (768, 12, 12, 3072)}
POOLINGS = ("token", "gap")


class ClassToken(tf.keras.layers.Layer):
  """Prepends one learned token (zeros at initialization) to a sequence (batch, length, width).

  `offsets` tells Occam's default variable selector that the token is a learned input, like a bias,
  and not a weight to decay.
  """

  def build(self, input_shape):
    self.class_token = self.add_weight(name="class_token", shape=(1, 1, int(input_shape[-1])),
                                       initializer="zeros")
    self.offsets = (self.class_token,)
    super().build(input_shape)

  def call(self, inputs):
    token = tf.tile(tf.cast(self.class_token, inputs.dtype), [tf.shape(inputs)[0], 1, 1])
    return tf.concat([token, inputs], axis=1)


class PositionEmbedding(tf.keras.layers.Layer):
  """Adds a learned embedding per position (normal, standard deviation 0.02, at initialization).

  An added offset, like a bias: `offsets` keeps it out of Occam's default weight-decay selection.
  """

  def build(self, input_shape):
    self.position_embedding = self.add_weight(
        name="position_embedding", shape=(1, int(input_shape[1]), int(input_shape[2])),
        initializer=tf.keras.initializers.RandomNormal(stddev=0.02))
    self.offsets = (self.position_embedding,)
    super().build(input_shape)

  def call(self, inputs):
    return inputs + tf.cast(self.position_embedding, inputs.dtype)


class FirstToken(tf.keras.layers.Layer):
  """(batch, length, width) -> (batch, width): the representation of the class token."""

  def call(self, inputs):
    return inputs[:, 0]


def _dropout(x, rate: float, name: str):
  return tf.keras.layers.Dropout(rate, name=name)(x) if rate else x


def _encoder_block(x, *, prefix: str, heads: int, mlp_width: int, dropout: float, drop_rate: float):
  """One pre-norm block; both residual branches are dropped with the block's stochastic depth rate."""
  width = x.shape[-1]
  y = tf.keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_attention_norm")(x)
  y = tf.keras.layers.MultiHeadAttention(heads, width // heads, name=f"{prefix}_attention")(y, y)
  y = _dropout(y, dropout, f"{prefix}_attention_dropout")
  drop = stochastic_depth.drop_path(drop_rate, rank=3, name=f"{prefix}_attention_drop_path")
  x = stochastic_depth.residual_add(x, y, drop, name=f"{prefix}_attention_add")
  y = tf.keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_mlp_norm")(x)
  y = tf.keras.layers.Dense(mlp_width, activation="gelu", name=f"{prefix}_mlp_dense_a")(y)
  y = _dropout(y, dropout, f"{prefix}_mlp_dropout_a")
  y = tf.keras.layers.Dense(width, name=f"{prefix}_mlp_dense_b")(y)
  y = _dropout(y, dropout, f"{prefix}_mlp_dropout_b")
  drop = stochastic_depth.drop_path(drop_rate, rank=3, name=f"{prefix}_mlp_drop_path")
  return stochastic_depth.residual_add(x, y, drop, name=f"{prefix}_mlp_add")


@gin.configurable
def ViT(*, input_shape: Sequence[int] = (224, 224, 3), num_outputs: int = 1000, variant: str = "S",
        patch_size: int = 16, depth: int | None = None, pooling: str = "token", dropout: float = 0.0,
        stochastic_depth_rate: float = 0.0, name: str = "vit") -> tf.keras.Model:
  """ViT-`variant`/`patch_size` (ViT-S/16 at 224 px on 1000 classes: 22,050,664 parameters).

  Args:
    input_shape, num_outputs: per-example image shape and number of classes (from the data). The
      height and width must be multiples of `patch_size`; the position embeddings (and so the
      parameter count) follow the number of patches.
    variant: 'Ti' (width 192, 3 heads), 'S' (384, 6 heads) or 'B' (768, 12 heads); 12 blocks each.
    patch_size: side of the square patches (16 for the standard models at 224 px; 4 is usual at 32 px).
    depth: number of encoder blocks; None takes the variant's (12).
    pooling: 'token' (the class token, as in the paper) or 'gap' (no class token; the mean of the
      final tokens, as in big_vision's "better plain ViT" baselines).
    dropout: rate of the dropout after the embeddings, the attention and both MLP layers.
    stochastic_depth_rate: drop probability of the last block's two branches (linear rule, see
      `models/stochastic_depth.py`); 0 disables it.
  """
  owner = "ViT"
  if variant not in VARIANTS:
    raise ValueError(f"{owner}: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
  if pooling not in POOLINGS:
    raise ValueError(f"{owner}: pooling must be one of {POOLINGS}, got {pooling!r}")
  if not 0 <= dropout < 1:
    raise ValueError(f"{owner}: dropout must be in [0, 1), got {dropout!r}")
  patch_size = checks.integer(owner, "patch_size", patch_size, minimum=1)
  width, variant_depth, heads, mlp_width = VARIANTS[variant]
  depth = variant_depth if depth is None else checks.integer(owner, "depth", depth, minimum=1)
  rates = stochastic_depth.linear_rates(stochastic_depth.check_rate(owner, stochastic_depth_rate), depth)
  inputs = layers.image_input(owner, input_shape, num_outputs)
  if inputs.shape[1] % patch_size or inputs.shape[2] % patch_size:
    raise ValueError(f"{owner}: the image size {tuple(inputs.shape[1:3])} is not a multiple of "
                     f"patch_size={patch_size}")
  x = tf.keras.layers.Conv2D(width, patch_size, strides=patch_size, name="patch_embedding")(inputs)
  x = tf.keras.layers.Reshape((-1, width), name="patches")(x)
  if pooling == "token":
    x = ClassToken(name="class_token")(x)
  x = PositionEmbedding(name="position_embedding")(x)
  x = _dropout(x, dropout, "embedding_dropout")
  for block, rate in enumerate(rates):
    x = _encoder_block(x, prefix=f"block{block}", heads=heads, mlp_width=mlp_width, dropout=dropout,
                       drop_rate=rate)
  x = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="encoder_norm")(x)
  if pooling == "token":
    x = FirstToken(name="head_token")(x)
  else:
    x = tf.keras.layers.GlobalAveragePooling1D(name="head_pool")(x)
  return tf.keras.Model(inputs, layers.logits(x, num_outputs, kernel_initializer="zeros"), name=name)
