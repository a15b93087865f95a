"""Learning-rate schedules, gin-configurable.

Each is a `tf.keras.optimizers.schedules.LearningRateSchedule` (the same base class in Keras 2 and 3),
so it plugs into any Keras optimizer, and each exposes `base_learning_rate`: the peak rate that
`DecoupledWeightDecay(convention='schedule_multiplier')` divides by to get the multiplier eta_t.
"""

from __future__ import annotations

import math
from typing import Sequence

import gin
import tensorflow as tf

from trainer.common import checks


@gin.configurable
class Constant(tf.keras.optimizers.schedules.LearningRateSchedule):
  """lr_t = base_learning_rate."""

  def __init__(self, base_learning_rate: float = 1e-3):
    super().__init__()
    self.base_learning_rate = checks.nonnegative("Constant", "base_learning_rate", base_learning_rate)

  def __call__(self, step):
    del step  # constant
    return tf.constant(self.base_learning_rate, tf.float32)

  def get_config(self) -> dict:
    return {"base_learning_rate": self.base_learning_rate}


@gin.configurable
class WarmupCosine(tf.keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to the base rate over `warmup_steps`, then cosine decay to `final_fraction` of it.

  lr_t = base * t / warmup for t < warmup; afterwards
  lr_t = base * (final + (1 - final) * (1 + cos(pi * min(1, (t - warmup) / (decay_steps - warmup)))) / 2).
  """

  def __init__(self, base_learning_rate: float = 1e-3, warmup_steps: int = 0, decay_steps: int = gin.REQUIRED,
               final_fraction: float = 0.0):
    super().__init__()
    self.base_learning_rate = checks.nonnegative("WarmupCosine", "base_learning_rate", base_learning_rate)
    if warmup_steps < 0 or decay_steps <= warmup_steps:
      raise ValueError("WarmupCosine: need 0 <= warmup_steps < decay_steps, "
                       f"got {warmup_steps}, {decay_steps}")
    if not 0.0 <= final_fraction <= 1.0:
      raise ValueError(f"WarmupCosine.final_fraction must be in [0, 1], got {final_fraction}")
    self.warmup_steps = int(warmup_steps)
    self.decay_steps = int(decay_steps)
    self.final_fraction = float(final_fraction)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(max(self.warmup_steps, 1))
    warm = self.base_learning_rate * step / warmup
    progress = tf.minimum(1.0, (step - self.warmup_steps) / float(self.decay_steps - self.warmup_steps))
    cosine = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + tf.cos(math.pi * progress))
    return tf.where(step < self.warmup_steps, warm, self.base_learning_rate * cosine)

  def get_config(self) -> dict:
    return {"base_learning_rate": self.base_learning_rate, "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps, "final_fraction": self.final_fraction}


@gin.configurable
class Piecewise(tf.keras.optimizers.schedules.LearningRateSchedule):
  """lr_t = base * multipliers[i] for boundaries[i-1] <= t < boundaries[i] (multipliers[0] = 1 implied first).

  `multipliers` has one entry per boundary: the factor applied from that boundary on, e.g.
  boundaries=[1000, 2000], multipliers=[0.1, 0.01] is the classic step schedule.
  """

  def __init__(self, base_learning_rate: float = 1e-3, boundaries: Sequence[int] = gin.REQUIRED,
               multipliers: Sequence[float] = gin.REQUIRED):
    super().__init__()
    self.base_learning_rate = checks.nonnegative("Piecewise", "base_learning_rate", base_learning_rate)
    if len(boundaries) != len(multipliers) or list(boundaries) != sorted(boundaries):
      raise ValueError("Piecewise: boundaries must be increasing and as many as multipliers, "
                       f"got boundaries={list(boundaries)}, multipliers={list(multipliers)}")
    self.boundaries = [int(b) for b in boundaries]
    self.multipliers = [float(m) for m in multipliers]

  def __call__(self, step):
    step = tf.cast(step, tf.int64)
    rates = tf.constant([self.base_learning_rate] + [self.base_learning_rate * m for m in self.multipliers],
                        tf.float32)
    index = tf.reduce_sum(tf.cast(step >= tf.constant(self.boundaries, tf.int64), tf.int32))
    return rates[index]

  def get_config(self) -> dict:
    return {"base_learning_rate": self.base_learning_rate, "boundaries": self.boundaries,
            "multipliers": self.multipliers}


def as_schedule(learning_rate) -> tf.keras.optimizers.schedules.LearningRateSchedule:
  """A float becomes `Constant(float)`; a schedule with a `base_learning_rate` passes through."""
  if isinstance(learning_rate, (int, float)):
    return Constant(float(learning_rate))
  if not hasattr(learning_rate, "base_learning_rate"):
    raise TypeError("Trainer.learning_rate must be a number or an Occam schedule (@Constant(), "
                    f"@WarmupCosine(), @Piecewise()), got {learning_rate!r}")
  return learning_rate


class Scaled(tf.keras.optimizers.schedules.LearningRateSchedule):
  """`scale * schedule(step)` with `scale` a checkpointed variable (1.0 unless a recovery lowered it).

  The Trainer always wraps its schedule in one, so that `Trainer.on_nonfinite='restore'` can lower
  the learning rate of the optimizer it already built, and a resumed run keeps the lowered rate.
  `base_learning_rate` stays the unscaled one, so a lowered rate also lowers the schedule multiplier
  `lr_t / lr_0` of `DecoupledWeightDecay(convention='schedule_multiplier')`.
  """

  def __init__(self, schedule: tf.keras.optimizers.schedules.LearningRateSchedule):
    super().__init__()
    self.schedule = schedule
    self.base_learning_rate = schedule.base_learning_rate
    self.scale = tf.Variable(1.0, trainable=False, name="learning_rate_scale")

  def __call__(self, step):
    return self.scale * self.schedule(step)

  def get_config(self) -> dict:
    return {"schedule": self.schedule.get_config()}
