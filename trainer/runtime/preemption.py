"""Preemption: SIGTERM or SIGINT asks the trainer to stop cleanly at the next loop boundary.

Cloud TPU and spot GPU jobs get a SIGTERM before they are killed. The trainer finishes the current
host loop, writes a checkpoint and exits with `EXIT_PREEMPTED`; rerunning the same command resumes.
A second signal restores the default handler's behaviour (a second Ctrl-C interrupts at once).
Under MultiWorkerMirroredStrategy the signal may reach only some workers, so the decision to stop is
all-reduced at each loop boundary and every worker stops at the same step.
"""

from __future__ import annotations

import signal
import threading

import tensorflow as tf
from absl import logging

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "temporary failure; retrying may succeed"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Training stopped on a signal after saving a checkpoint at `step`."""

  def __init__(self, step: int):
    super().__init__(f"preempted: checkpoint written at step {step}; rerun the same command to resume")
    self.step = step


class PreemptionWatcher:
  """A context manager that records SIGTERM/SIGINT instead of dying mid-step."""

  def __init__(self, strategy: tf.distribute.Strategy):
    self._strategy = strategy
    self._requested = False
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
    self._requested = True
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def _agree_fn(self, requested: tf.Tensor) -> tf.Tensor:
    per_replica = self._strategy.run(lambda: tf.identity(requested))
    return self._strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  def should_stop(self) -> bool:
    """True once any process of the job received a signal (a collective under multi-worker)."""
    if self._agree is None:
      return self._requested
    return float(self._agree(tf.constant(float(self._requested)))) > 0


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
  return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())
