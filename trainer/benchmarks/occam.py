"""Occam measured through its public seams, exactly as `trainer.train` builds and runs it.

`register_all()`, the gin bindings parsed by `trainer.config.parsing.parse`, `Trainer()` under the
strategy's scope, `builder.build`, and per host loop `runners.train_runner(run).train(steps_per_loop)`:
what the Controller calls (reset the metric accumulators, one compiled `train_program.loop` call,
read the metrics, the learning rate and the `Monitor`'s per-loop statistics). Evaluation,
checkpoints and summary writing happen at their own intervals and are not timed. The wall time of the
Monitor's own calls is counted apart (`TimedMonitor`): its share of a loop.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Callable, Mapping, Sequence

import gin
import numpy as np
import tensorflow as tf

from trainer.benchmarks.timing import Variant, clock, repeated
from trainer.config import parsing, registry
from trainer.loop import builder, runners
from trainer.loop.settings import Trainer
from trainer.metrics.monitor import Monitor, MonitorState


@gin.configurable
def MonitorOff(**settings) -> Monitor:
  """A `Monitor` that computes nothing per loop: the baseline of the Monitor's cost.

  No weight statistics and no gradient-norm probe (sharpness is off by default); other `Monitor`
  settings pass through, e.g. `train_eval_examples=0` for no work per evaluation either.
  """
  return Monitor(statistics_every=0, grad_norm_every=0, **settings)


class TimedMonitor:
  """A run's `MonitorState` whose per-loop and per-evaluation calls add their [wall, CPU] seconds to
  `seconds` (`timing.clock`)."""

  def __init__(self, monitor: MonitorState):
    self._monitor = monitor
    self.seconds = np.zeros(2)

  def _timed(self, call: Callable[[], dict[str, float]]) -> dict[str, float]:
    started = clock()
    try:
      return call()
    finally:
      self.seconds += clock() - started

  def after_loop(self, previous_step: int, step: int) -> dict[str, float]:
    return self._timed(lambda: self._monitor.after_loop(previous_step, step))

  def after_eval(self, eval_scalars: Mapping[str, float]) -> dict[str, float]:
    return self._timed(lambda: self._monitor.after_eval(eval_scalars))

  def __getattr__(self, name: str):  # histograms, checkpoint_trackables: as the run's Monitor
    return getattr(self._monitor, name)


def timed_monitor(run: builder.Run) -> tuple[builder.Run, TimedMonitor]:
  """`run` with its Monitor timed, and the timer."""
  timed = TimedMonitor(run.monitor)
  return dataclasses.replace(run, monitor=timed), timed


def build_run(bindings: Sequence[str], strategy: tf.distribute.Strategy, model_dir: str) -> builder.Run:
  """The `Run` that `bindings` alone describe, built under `strategy` as `trainer.train` builds it."""
  registry.register_all()
  parsing.parse([], bindings)
  return builder.build(Trainer(), strategy=strategy, model_dir=model_dir, is_chief=True)


@dataclasses.dataclass
class OccamVariant(Variant):
  """A `Variant` that also records, per measurement, the [wall, CPU] seconds spent in the Monitor's calls."""

  monitor_seconds: list[np.ndarray] = dataclasses.field(default_factory=list)

  @property
  def monitor_median(self) -> np.ndarray:
    """[wall, CPU] seconds in the Monitor per measurement, the median over the timed ones."""
    return np.median(np.array(self.monitor_seconds[-len(self.seconds):]), axis=0)  # [0] was the warm-up

  @property
  def monitor_share(self) -> np.ndarray:
    """[wall, CPU] share of the Monitor's calls in a measurement (medians)."""
    return self.monitor_median / np.median(np.array(self.seconds), axis=0)


def occam_variant(label: str, bindings: Sequence[str], *, steps_per_loop: int, loops: int, model_dir: str,
                  strategy: tf.distribute.Strategy | None = None) -> OccamVariant:
  """A freshly built run (in a new directory under `model_dir`), timed over `loops` host loops."""
  run, timed = timed_monitor(build_run(bindings, strategy or tf.distribute.get_strategy(),
                                       tempfile.mkdtemp(dir=model_dir)))
  runner = runners.train_runner(run)

  def run_loop() -> None:
    output = runner.train(steps_per_loop)
    if output.nonfinite:  # A non-finite loop returns before the Monitor: not what training times.
      raise FloatingPointError(f"{label}: non-finite {', '.join(output.nonfinite)} at step "
                               f"{output.first_bad_step}")

  loops_timed, monitor_seconds = repeated(run_loop, loops), []

  def measure() -> np.ndarray:
    timed.seconds = np.zeros(2)
    seconds = loops_timed()
    monitor_seconds.append(timed.seconds)
    return seconds

  return OccamVariant(label, measure, steps_per_loop * loops, monitor_seconds=monitor_seconds)
