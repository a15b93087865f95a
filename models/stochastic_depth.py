"""Stochastic depth (Huang et al., 2016): residual branches dropped per example, more often deeper down.

Training drops the residual branch of block l of L (counted from 1 at the input) for each example
independently, with probability l / L * rate (the paper's linear decay rule: the first block almost
never, the last one with probability `rate`). A surviving branch is scaled by 1 / (1 - p), so the
branch's expectation over the drop equals the branch itself; inference then uses every branch as is
(the identity), and a model's inference output does not depend on the rate at all. This is the
"inverted" form of timm's and big_vision's `DropPath`; Huang et al. instead leave training unscaled
and multiply each branch by its survival probability at inference, which is the same function up to
that constant per block.

The drop is a `Dropout` layer whose noise shape is one number per example (`(None, 1, ..., 1)`), so it
draws its masks from Keras' seeded random streams: `tf.keras.utils.set_random_seed` makes runs
repeat, and on Keras 3 its seed state is a model variable that checkpoints restore.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.common import checks


def check_rate(owner: str, rate: float) -> float:
  """`rate` as a float if it lies in [0, 1); else ValueError naming `owner.stochastic_depth_rate`.

  A rate of 1 would drop the last block always: its branch would never train.
  """
  rate = checks.nonnegative(owner, "stochastic_depth_rate", rate)
  if rate >= 1:
    raise ValueError(f"{owner}: stochastic_depth_rate must be < 1, got {rate!r}")
  return rate


def linear_rates(rate: float, num_blocks: int) -> list[float]:
  """The drop probability of each of `num_blocks` residual blocks: l / L * rate for l = 1..L."""
  return [rate * block / num_blocks for block in range(1, num_blocks + 1)]


def drop_path(rate: float, *, rank: int, name: str) -> tf.keras.layers.Layer | None:
  """A layer that zeroes a rank-`rank` branch per example with probability `rate` (None if rate is 0).

  No layer at all for a zero rate, so that a model without stochastic depth has exactly the layers
  and variables it would have without the option.
  """
  if rate == 0:
    return None
  return tf.keras.layers.Dropout(rate, noise_shape=(None,) + (1,) * (rank - 1), name=name)


def residual_add(shortcut, branch, drop: tf.keras.layers.Layer | None, *, name: str):
  """shortcut + branch, with the branch passed through `drop` (a `drop_path` layer or None) first."""
  if drop is not None:
    branch = drop(branch)
  return tf.keras.layers.Add(name=name)([shortcut, branch])
