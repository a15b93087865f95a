"""Preemption: SIGTERM or SIGINT asks the trainer to stop cleanly at the next loop boundary.

Cloud TPU and spot GPU jobs get a SIGTERM before they are killed. The trainer finishes the current
host loop, writes a checkpoint and raises `Preempted`: the command line exits with `EXIT_PREEMPTED` and
rerunning the same command resumes. A Ctrl-C (SIGINT) does the same but raises `Interrupted`, a
`KeyboardInterrupt`, so that a host program (a notebook, pytest, a tuner calling `trainer.train`) stops
as on any Ctrl-C instead of going on as if the run had merely ended. The handlers are installed only
while training and the previous ones are back afterwards; a second signal gets the previous handler's
behaviour at once (a second Ctrl-C interrupts mid-loop).
Under MultiWorkerMirroredStrategy the signal may reach only some workers, so the decision to stop is
all-reduced at each loop boundary and every worker stops at the same step.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

import tensorflow as tf
from absl import logging

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "temporary failure; retrying may succeed"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Training stopped on a signal after saving a checkpoint at `step`."""

  def __init__(self, step: int):
    super().__init__(f"preempted: checkpoint written at step {step}; rerun the same command to resume")
    self.step = step


class Interrupted(KeyboardInterrupt):
  """Training stopped on Ctrl-C (SIGINT) after saving a checkpoint at `step`.

  A `KeyboardInterrupt`, so that code calling `trainer.train` stops as on any Ctrl-C (`except
  Exception` does not swallow it); the command line turns it into `EXIT_PREEMPTED` like `Preempted`.
  """

  def __init__(self, step: int):
    super().__init__(f"interrupted: checkpoint written at step {step}; rerun the same command to resume")
    self.step = step


class PreemptionWatcher:
  """A context manager that records SIGTERM/SIGINT instead of dying mid-step."""

  def __init__(self, strategy: tf.distribute.Strategy):
    self._strategy = strategy
    self._received: int | None = None
    self._previous: dict[int, object] = {}
    self._agree = tf.function(self._agree_fn) if _multi_worker(strategy) else None

  def __enter__(self) -> PreemptionWatcher:
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
      for sig in _SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning("received %s: finishing the current loop, then checkpointing and exiting",
                    signal.Signals(signum).name)
    self._received = signum
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def _agree_fn(self, requested: tf.Tensor) -> tf.Tensor:
    per_replica = self._strategy.run(lambda: tf.identity(requested))
    return self._strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  def local_check(self) -> Callable[[], bool] | None:
    """Whether this process got a signal, for ending a host loop early (`TrainRunner.train`); None under
    multi-worker, where every worker must stop at the same step, agreed at loop boundaries."""
    return None if self._agree is not None else (lambda: self._received is not None)

  def should_stop(self) -> bool:
    """True once any process of the job received a signal (a collective under multi-worker)."""
    requested = self._received is not None
    if self._agree is None:
      return requested
    return float(self._agree(tf.constant(float(requested)))) > 0

  def stopped(self, step: int) -> Preempted | Interrupted:
    """The error to raise once the checkpoint at `step` is written: `Interrupted` if this process got a
    SIGINT, else `Preempted` (a SIGTERM, or another worker's signal)."""
    return Interrupted(step) if self._received == signal.SIGINT else Preempted(step)


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
  return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())
