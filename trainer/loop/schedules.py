"""Learning-rate schedules, gin-configurable.

Each is a `tf.keras.optimizers.schedules.LearningRateSchedule` (the same base class in Keras 2 and 3),
so it plugs into any Keras optimizer, and each exposes `base_learning_rate`: the peak rate that
`DecoupledWeightDecay(convention='schedule_multiplier')` divides by to get the multiplier eta_t.

Schedules follow the run: a schedule with a length (`WarmupCosine.decay_steps`) left unbound takes
the run's length from `for_run(learning_rate, run_steps)`, which the run builder calls with the
number of steps it trains. Keras' own schedules are accepted as they are; `base_learning_rate_of`
states where their base rate comes from.
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

  `decay_steps` (where the cosine ends, counted from step 0) defaults to None: the run's length,
  filled in by `for_run`, so that a longer run (also a resumed one) decays over all of its steps.
  """

  def __init__(self, base_learning_rate: float = 1e-3, warmup_steps: int = 0, decay_steps: int | None = None,
               final_fraction: float = 0.0):
    super().__init__()
    self.base_learning_rate = checks.nonnegative("WarmupCosine", "base_learning_rate", base_learning_rate)
    if warmup_steps < 0 or (decay_steps is not None and decay_steps <= warmup_steps):
      raise ValueError("WarmupCosine: need 0 <= warmup_steps < decay_steps (decay_steps defaults to the "
                       f"run's length), got warmup_steps={warmup_steps}, decay_steps={decay_steps}")
    if not 0.0 <= final_fraction <= 1.0:
      raise ValueError(f"WarmupCosine.final_fraction must be in [0, 1], got {final_fraction}")
    self.warmup_steps = int(warmup_steps)
    self.decay_steps = None if decay_steps is None else int(decay_steps)
    self.final_fraction = float(final_fraction)

  def for_run_length(self, run_steps: int) -> WarmupCosine:
    """This schedule if its `decay_steps` is bound, else a copy that decays over `run_steps`.

    A run no longer than the warmup only warms up (decay_steps = warmup_steps + 1), so that a short
    smoke run of a config stays legal.
    """
    if self.decay_steps is not None:
      return self
    return WarmupCosine(**{**self.get_config(), "decay_steps": max(run_steps, self.warmup_steps + 1)})

  @property
  def end_step(self) -> int | None:
    """The step from which the rate stays at its final value."""
    return self.decay_steps

  def __call__(self, step):
    if self.decay_steps is None:
      raise ValueError("WarmupCosine.decay_steps is unset: bind it, or let `schedules.for_run` give it the "
                       "run's length")
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


@gin.configurable
class InverseSquareRoot(tf.keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup to the base rate over `warmup_steps`, then decay as 1 / sqrt(t) (Vaswani et al., 2017).

  lr_t = base * t / warmup for t < warmup, lr_t = base * sqrt(warmup / t) afterwards (warmup >= 1).
  Keras has no such schedule (its `InverseTimeDecay` decays as 1 / t).
  """

  def __init__(self, base_learning_rate: float = 1e-3, warmup_steps: int = 1000):
    super().__init__()
    owner = "InverseSquareRoot"
    self.base_learning_rate = checks.nonnegative(owner, "base_learning_rate", base_learning_rate)
    self.warmup_steps = checks.integer(owner, "warmup_steps", warmup_steps, minimum=1)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(self.warmup_steps)
    return self.base_learning_rate * tf.minimum(step / warmup, tf.sqrt(warmup / tf.maximum(step, 1.0)))

  def get_config(self) -> dict:
    return {"base_learning_rate": self.base_learning_rate, "warmup_steps": self.warmup_steps}


ONE_CYCLE_CONVENTIONS = ("optax", "pytorch")


@gin.configurable
class OneCycle(tf.keras.optimizers.schedules.LearningRateSchedule):
  """The one-cycle policy (Smith & Topin, 2019), cosine annealing, the rate only; Keras has none.

  From start = base / `div_factor` up to the base rate, then down to end = start / `final_div_factor`,
  both halves along a cosine `low + (high - low) * (1 + cos(pi * p)) / 2`. Two conventions place the
  peak and the floor differently (T = `total_steps`, f = `warmup_fraction`):

  - 'optax' (the default): optax's `cosine_onecycle_schedule(T, base, f, div_factor, final_div_factor)`.
    Peak at step P = floor(f * T), floor at step T: p = t / P before the peak, (t - P) / (T - P) after,
    the final rate from T on (from 0 on the way down if P = 0).
  - 'pytorch': PyTorch's `OneCycleLR(max_lr=base, total_steps=T, pct_start=f, anneal_strategy='cos',
    three_phase=False)` (its rate; momentum cycling is not done). Peak at step P = f * T - 1 (a
    fraction if f * T is), floor at step T - 1: p = t / P while t <= P, (t - P) / (T - 1 - P) after,
    held at the final rate from T - 1 on (PyTorch refuses steps past T). If P <= 0, the rate falls
    from step 0 on, as PyTorch's does for P < 0.

  The two differ by one step in both places, and more when f * T is not a whole number. `total_steps`
  defaults to None: the run's length (see `for_run`).
  """

  def __init__(self, base_learning_rate: float = 1e-3, total_steps: int | None = None,
               warmup_fraction: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
               convention: str = "optax"):
    super().__init__()
    owner = "OneCycle"
    self.base_learning_rate = checks.nonnegative(owner, "base_learning_rate", base_learning_rate)
    self.total_steps = None if total_steps is None else checks.integer(owner, "total_steps", total_steps,
                                                                       minimum=2)
    if not 0.0 < warmup_fraction < 1.0:
      raise ValueError(f"OneCycle.warmup_fraction must be in (0, 1), got {warmup_fraction}")
    if convention not in ONE_CYCLE_CONVENTIONS:
      raise ValueError(f"OneCycle.convention={convention!r} is not one of {ONE_CYCLE_CONVENTIONS}")
    self.warmup_fraction = float(warmup_fraction)
    self.div_factor = checks.positive(owner, "div_factor", div_factor)
    self.final_div_factor = checks.positive(owner, "final_div_factor", final_div_factor)
    self.convention = convention

  def for_run_length(self, run_steps: int) -> OneCycle:
    """This schedule if its `total_steps` is bound, else a copy whose cycle spans `run_steps`."""
    if self.total_steps is not None:
      return self
    return OneCycle(**{**self.get_config(), "total_steps": run_steps})

  @property
  def end_step(self) -> int | None:
    """The step from which the rate stays at its final value."""
    if self.total_steps is None:
      return None
    return self.total_steps - (self.convention == "pytorch")

  def __call__(self, step):
    if self.total_steps is None:
      raise ValueError("OneCycle.total_steps is unset: bind it, or let `schedules.for_run` give it the "
                       "run's length")
    step = tf.cast(step, tf.float32)
    peak, start = self.base_learning_rate, self.base_learning_rate / self.div_factor
    end = start / self.final_div_factor
    if self.convention == "optax":
      peak_step, end_step = float(math.floor(self.warmup_fraction * self.total_steps)), self.total_steps
    else:
      peak_step, end_step = self.warmup_fraction * self.total_steps - 1.0, self.total_steps - 1
    rise = tf.clip_by_value(step / peak_step, 0.0, 1.0) if peak_step > 0 else tf.ones_like(step)
    fall = tf.clip_by_value((step - peak_step) / (end_step - peak_step), 0.0, 1.0)

    def anneal(high, low, progress):  # from high at progress 0 to low at progress 1, along a cosine
      return low + (high - low) * 0.5 * (1.0 + tf.cos(math.pi * progress))

    rising = step <= peak_step if self.convention == "pytorch" else step < peak_step
    return tf.where(rising, anneal(start, peak, rise), anneal(peak, end, fall))

  def get_config(self) -> dict:
    return {"base_learning_rate": self.base_learning_rate, "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction, "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor, "convention": self.convention}


def for_run(learning_rate, run_steps: int) -> tf.keras.optimizers.schedules.LearningRateSchedule:
  """The schedule a run of `run_steps` steps uses for `learning_rate` (a number or any Keras schedule).

  A number becomes `Constant(number)`; an Occam schedule with a length it was not given
  (`for_run_length`) gets `run_steps`; any other `LearningRateSchedule` passes through unchanged.
  """
  if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool):
    return Constant(float(learning_rate))
  if not isinstance(learning_rate, tf.keras.optimizers.schedules.LearningRateSchedule):
    raise TypeError("Trainer.learning_rate must be a number or a learning-rate schedule (@WarmupCosine(), "
                    f"@Piecewise(), @CosineDecay(), @ExponentialDecay(), ...), got {learning_rate!r}")
  for_run_length = getattr(learning_rate, "for_run_length", None)
  return for_run_length(run_steps) if for_run_length is not None else learning_rate


def base_learning_rate_of(schedule: tf.keras.optimizers.schedules.LearningRateSchedule) -> float:
  """The base (peak) rate lr_0 of `schedule`, which 'schedule_multiplier' decay divides by.

  The rule, first match: an Occam schedule's `base_learning_rate`; Keras `CosineDecay`'s
  `warmup_target` when it warms up (the rate it warms up to); `initial_learning_rate` (Keras'
  `CosineDecay`, `CosineDecayRestarts`, `ExponentialDecay`, `InverseTimeDecay`, `PolynomialDecay`);
  the largest of `PiecewiseConstantDecay`'s `values`; otherwise the rate at step 0.
  """
  if hasattr(schedule, "base_learning_rate"):
    return float(schedule.base_learning_rate)
  if getattr(schedule, "warmup_target", None) is not None and getattr(schedule, "warmup_steps", 0):
    return float(schedule.warmup_target)
  if hasattr(schedule, "initial_learning_rate"):
    return float(schedule.initial_learning_rate)
  if isinstance(schedule, tf.keras.optimizers.schedules.PiecewiseConstantDecay):
    return max(float(value) for value in schedule.values)
  return float(schedule(0))


def end_step(schedule: tf.keras.optimizers.schedules.LearningRateSchedule) -> int | None:
  """The step from which `schedule` stays at its final rate, None if it never settles or is unknown.

  Occam schedules declare it (`end_step`); Keras' `CosineDecay` ends at `warmup_steps + decay_steps`
  and a non-cycling `PolynomialDecay` at `decay_steps`.
  """
  if hasattr(schedule, "end_step"):
    return schedule.end_step
  keras_schedules = tf.keras.optimizers.schedules
  if isinstance(schedule, keras_schedules.CosineDecay):
    return int(getattr(schedule, "warmup_steps", 0) or 0) + int(schedule.decay_steps)
  if isinstance(schedule, keras_schedules.PolynomialDecay) and not schedule.cycle:
    return int(schedule.decay_steps)
  return None


def ended_early_warning(schedule: tf.keras.optimizers.schedules.LearningRateSchedule,
                        run_steps: int) -> str | None:
  """A one-line warning when `schedule` reaches its final rate before the run's `run_steps`, else None."""
  end = end_step(schedule)
  if end is None or end >= run_steps:
    return None
  final = float(schedule(end))
  return (f"the learning-rate schedule {type(schedule).__name__} ends at step {end}, before the run's "
          f"{run_steps} steps: the last {run_steps - end} steps run at its final rate {final:.3g}; leave "
          f"its length unbound to follow the run, or bind it to the run's length")


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
    self.base_learning_rate = base_learning_rate_of(schedule)
    self.scale = tf.Variable(1.0, trainable=False, name="learning_rate_scale")

  def __call__(self, step):
    return self.scale * self.schedule(step)

  def get_config(self) -> dict:
    return {"schedule": self.schedule.get_config()}
