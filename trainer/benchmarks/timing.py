"""How every benchmark times its variants: [wall, CPU] clocks, interleaved repeats, medians, ratios.

Variants compared with each other are built first and then timed interleaved (A B C A B C ...) after
one untimed warm-up each; each figure is the median over repeats, so load that comes and goes on a
shared machine hits every variant alike and the *ratios* are what to read.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf


def clock() -> np.ndarray:
  """[wall seconds, this process's CPU seconds]; every measurement reads both.

  Wall time is what a user waits for, but on a shared machine it also counts the time other
  processes held the cores. CPU time counts only our own work (all threads), so it is nearly immune
  to other load, but blind to time our cores sat idle (e.g. waiting on a host round trip).
  """
  return np.array([time.perf_counter(), time.process_time()])


@dataclasses.dataclass
class Variant:
  """One thing to time: `measure()` does `work` units (steps, or FLOPs) and returns `clock()` deltas."""

  label: str
  measure: Callable[[], np.ndarray]
  work: float
  seconds: list[np.ndarray] = dataclasses.field(default_factory=list)

  @property
  def rate(self) -> np.ndarray:
    """[work per wall second, work per CPU second], from the median times over repeats."""
    return self.work / np.median(np.array(self.seconds), axis=0)


def time_interleaved(variants: Sequence[Variant], repeats: int) -> None:
  """One untimed warm-up each (tracing, XLA compilation, prefetch), then `repeats` rounds A B C A B C."""
  for variant in variants:
    variant.measure()
  for _ in range(repeats):
    for variant in variants:
      variant.seconds.append(variant.measure())


def ratio(numerator: Variant, denominator: Variant) -> np.ndarray:
  """[wall, cpu] ratio of throughputs: > 1 means `numerator` is faster."""
  return numerator.rate / denominator.rate


def cost(extra: Variant, base: Variant) -> np.ndarray:
  """[wall, cpu] extra time per unit of work of `extra` relative to `base` (time with / without - 1)."""
  return base.rate / extra.rate - 1


def repeated(run_once: Callable[[], None], times: int) -> Callable[[], np.ndarray]:
  """A `Variant.measure`: `run_once()` called `times` times, timed as a whole."""
  def measure() -> np.ndarray:
    started = clock()
    for _ in range(times):
      run_once()
    return clock() - started
  return measure


class _ExecutionEndTimes(tf.keras.callbacks.Callback):
  """`clock()` at the end of every `fit` execution (one per `steps_per_execution` steps)."""

  def __init__(self):
    super().__init__()
    self.times: list[np.ndarray] = []

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(clock())


def fit_variant(label: str, model: tf.keras.Model, dataset: tf.data.Dataset, *, steps: int,
                steps_per_execution: int) -> Variant:
  """Keras `fit` of a compiled `model` (compiled with `steps_per_execution`) for `steps` steps.

  Each measurement is one `fit` call of one extra execution plus the timed steps; the time runs from
  the end of the first execution to the end of the last, so neither `fit`'s per-call setup nor the
  new iterator's first batch is counted: steady-state throughput, like Occam's host loops.
  """
  if steps % steps_per_execution:
    raise ValueError(f"{steps} steps are not a multiple of steps_per_execution={steps_per_execution}")

  def measure() -> np.ndarray:
    timer = _ExecutionEndTimes()
    model.fit(dataset, epochs=1, steps_per_epoch=steps + steps_per_execution, verbose=0, callbacks=[timer])
    return timer.times[-1] - timer.times[0]

  return Variant(label, measure, steps)
