"""The host loop's cadence: when to train, evaluate, checkpoint, summarize, and stop.

Like Orbit's Controller, it sees two small interfaces and never a model or a dataset:
`trainer.train(num_steps) -> TrainOutput` and `evaluator.evaluate(names) -> metrics`. Everything the
host does happens at loop boundaries, and everything beyond the cadence comes in from outside:

* `train_actions` run after every host loop, `eval_actions` after every validation evaluation, each
  as `action(step, scalars)` (early stopping and the best model, the operative config, user callbacks);
* `stop_conditions` are asked at every boundary (early stopping, a callback that asked to stop);
* `on_nonfinite(step, quantities)` decides what a non-finite step does (raise, or restore);
* `preemption.should_stop()` turns a SIGTERM (SIGINT) into a checkpoint and `Preempted` (`Interrupted`);
  the signal also ends the running loop early (`preemption.LoopCalls`: after the running call on a
  single worker, at the call every worker agreed on under multi-worker), so it waits for about one
  compiled call (`runners.SECONDS_PER_CALL`) rather than a whole loop.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Protocol, Sequence

from absl import logging

from trainer.loop.runners import TrainOutput
from trainer.metrics import tags
from trainer.metrics.summaries import SummaryWriters
from trainer.runtime.preemption import LoopCalls, PreemptionWatcher

Action = Callable[[int, Mapping[str, float]], None]


class Trainable(Protocol):
  step: int

  def train(self, num_steps: int, calls: LoopCalls | None = None) -> TrainOutput: ...


class Evaluable(Protocol):
  def evaluate(self, names: Sequence[str]) -> dict[str, float]: ...


class Controller:
  """Runs training from the current step to `train_steps` (or until a stop condition holds)."""

  def __init__(self, *, trainer: Trainable, evaluator: Evaluable, writers: SummaryWriters,
               save_checkpoint: Callable[[int], object], train_steps: int, steps_per_loop: int,
               eval_every: int, checkpoint_every: int, on_nonfinite: Callable[[int, Sequence[str]], None],
               preemption: PreemptionWatcher, train_actions: Sequence[Action] = (),
               eval_actions: Sequence[Action] = (), stop_conditions: Sequence[Callable[[], bool]] = ()):
    for name, value in (("train_steps", train_steps), ("steps_per_loop", steps_per_loop),
                        ("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
      if value < 1:
        raise ValueError(f"Controller: {name} must be >= 1, got {value}")
    self._trainer, self._evaluator, self._writers = trainer, evaluator, writers
    self._save_checkpoint, self._on_nonfinite, self._preemption = save_checkpoint, on_nonfinite, preemption
    self._train_steps, self._steps_per_loop = train_steps, steps_per_loop
    self._eval_every, self._checkpoint_every = eval_every, checkpoint_every
    self._train_actions, self._eval_actions = tuple(train_actions), tuple(eval_actions)
    self._stop_conditions = tuple(stop_conditions)

  def _should_stop(self) -> bool:
    return any(condition() for condition in self._stop_conditions)

  def _next_boundary(self, step: int) -> int:
    """The next step at which the host must act: loop end, evaluation, checkpoint or the last step."""
    return min(step + self._steps_per_loop, self._train_steps,
               (step // self._eval_every + 1) * self._eval_every,
               (step // self._checkpoint_every + 1) * self._checkpoint_every)

  def run(self) -> dict[str, float]:
    """Trains, evaluates and checkpoints; returns the last loop's metrics plus the final evaluation.

    Raises `Preempted` (`Interrupted`) after checkpointing when a SIGTERM (SIGINT) arrived; whatever
    `on_nonfinite` raises propagates with the last good checkpoint untouched.
    """
    step = self._trainer.step
    final: dict[str, float] = {}
    eta = Eta(self._train_steps)
    with self._preemption:
      while step < self._train_steps and not self._should_stop():
        # A signal ends the loop early: after the running call, or at the call the workers agreed on.
        output = self._trainer.train(self._next_boundary(step) - step, self._preemption.loop_calls())
        if output.nonfinite:
          self._on_nonfinite(output.first_bad_step, output.nonfinite)  # raises, or restores a checkpoint
          step = self._trainer.step
          continue
        step = output.step
        scalars = dict(output.scalars)
        if output.histograms:
          self._writers.write_histograms(tags.TRAIN, step, output.histograms)
        self._writers.write_scalars(tags.TRAIN, step, scalars)
        for action in self._train_actions:
          action(step, scalars)
        if step % self._eval_every == 0 or step == self._train_steps:
          scalars.update(self._evaluate(step, ["eval"]))
          for action in self._eval_actions:
            action(step, scalars)
        preempted = self._preemption.should_stop()
        stop = self._should_stop()
        due = step % self._checkpoint_every == 0 or step == self._train_steps or stop or preempted
        if due and self._preemption.saved_step != step:  # not saved at the agreed stop already
          self._save_checkpoint(step)
        _log_loop(step, self._train_steps, scalars, eta.update(step))
        final = scalars
        if preempted:
          raise self._preemption.stopped(step)
    # The last loop evaluated the validation split already; a run resumed at its end has not.
    final.update(self._evaluate(step, ["test"] if "eval/loss" in final else ["eval", "test"]))
    return final

  def _evaluate(self, step: int, names: Sequence[str]) -> dict[str, float]:
    scalars = self._evaluator.evaluate(names)
    self._writers.write_scalars(tags.EVAL, step, scalars)
    return scalars


class Eta:
  """Remaining time from the wall clock between loop ends, so it covers evaluation and checkpoints.

  Measured from the end of this invocation's first loop: that loop traces the compiled step (seconds
  on a small model), which would make any rate that includes it far too pessimistic.
  """

  def __init__(self, train_steps: int):
    self._train_steps = train_steps
    self._origin: tuple[float, int] | None = None

  def update(self, step: int) -> str:
    """The ETA after the loop that ended at `step`, e.g. '12s', or 'n/a' right after the first loop."""
    now = time.monotonic()
    if self._origin is None:
      self._origin = (now, step)
      return "n/a" if step < self._train_steps else "0s"
    origin_time, origin_step = self._origin
    seconds_per_step = (now - origin_time) / max(step - origin_step, 1)
    return f"{(self._train_steps - step) * seconds_per_step:.0f}s"


def loop_summary(step: int, train_steps: int, scalars: Mapping[str, float], eta: str) -> str:
  """`step: 500/1000 | loss: 0.31 | ... | steps/sec: 41.2 | eta: 12s`: the console's scalars of a loop."""
  parts = [f"step: {step}/{train_steps}"]
  parts += [f"{key.replace('train/', '')}: {scalars[key]:.4g}" for key in tags.console() if key in scalars]
  if "perf/steps_per_sec" in scalars:
    parts.append(f"steps/sec: {scalars['perf/steps_per_sec']:.1f}")
  parts.append(f"eta: {eta}")
  return " | ".join(parts)


def _log_loop(step: int, train_steps: int, scalars: Mapping[str, float], eta: str) -> None:
  """One greppable line per loop: `train | step: 500/1000 | loss: 0.31 | ... | steps/sec: 41.2 | eta: 12s`."""
  logging.info("train | %s", loop_summary(step, train_steps, scalars, eta))
