"""Preemption: SIGTERM or SIGINT asks the trainer to stop cleanly and checkpoint; every worker agrees where.

Cloud TPU and spot GPU jobs get a SIGTERM before they are killed. The trainer ends the running host
loop early (see `LoopCalls`), writes a checkpoint and raises `Preempted`: the command line exits with
`EXIT_PREEMPTED` and rerunning the same command resumes. A Ctrl-C (SIGINT) does the same but raises
`Interrupted`, a `KeyboardInterrupt`, so that a host program (a notebook, pytest, a tuner calling
`trainer.train`) stops as on any Ctrl-C instead of going on as if the run had merely ended. The handlers
are installed only while training and the previous ones are back afterwards; a second signal gets the
previous handler's behaviour at once (a second Ctrl-C interrupts mid-loop).

Where every worker must stop at the same step (MultiWorkerMirroredStrategy) or a preemption arrives as
an `OpError` (a TPU worker on Google's own platform), TensorFlow's
`tf.distribute.experimental.PreemptionCheckpointHandler` does the agreeing: each compiled call runs
through its `run`, it publishes the first signalled worker's next call count through the cluster's
coordination service, and every worker stops before that same call. Occam keeps its signal handlers (the
handler polls them through `termination_watcher_fn`) and its checkpoints: the handler's `save_fn` writes
Occam's checkpoint at the agreed step, and its `exit_fn` ends the loop instead of exiting the process.
The handler's own `CheckpointManager` gets an empty `tf.train.Checkpoint` in a scratch directory: it would
otherwise restore the latest checkpoint without Occam's checks and add its run counter to Occam's
checkpoints. Under MultiWorkerMirroredStrategy the stop decision is also all-reduced at each loop
boundary (a signal during a loop's last call, or a platform where the handler does nothing: on a
Google Cloud CPU or TPU VM it passes calls through).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from typing import Any, Callable

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


class StopAgreed(Exception):
  """Every worker agreed to stop before its next compiled call, at `step`, and the checkpoint is written."""

  def __init__(self, step: int):
    super().__init__(f"stop agreed at step {step}")
    self.step = step


class LoopCalls:
  """How `TrainRunner.train` runs a host loop while a preemption may come: in calls of about
  `runners.SECONDS_PER_CALL`, each through `run`, with a look at the stop request after each.

  On a single worker the loop ends after the call during which a signal came. With TensorFlow's handler
  (multi-worker, TPU) `run` raises `StopAgreed` before the call at which the workers agreed to stop, and
  under multi-worker the call sizes are agreed too (the workers' collectives must match call for call).
  """

  def __init__(self, watcher: PreemptionWatcher):
    self._watcher = watcher
    # Calls between a signal and the stop: the running one, plus (with TensorFlow's handler) the one it
    # lets every worker start before the agreed count. The runner sizes calls to split its time budget.
    self.calls_to_stop = 1 if watcher.handler is None else 2

  def run(self, function: Callable, *args) -> Any:
    """`function(*args)`, through the handler if there is one (it may raise `StopAgreed` first)."""
    handler = self._watcher.handler
    return function(*args) if handler is None else handler.run(function, *args)

  def steps_per_call(self, proposed: int) -> int:
    """The next call's size: `proposed` (from this worker's rate), or under multi-worker the workers' mean."""
    return self._watcher.mean_over_workers(proposed)

  def stop_requested(self) -> bool:
    """Whether to end the loop after this call: a signal on this, the only worker; under multi-worker
    the handler decides (`run` raises)."""
    return self._watcher.received and not self._watcher.multi_worker


class PreemptionWatcher:
  """A context manager that records SIGTERM/SIGINT instead of dying mid-step, and agrees where to stop.

  `save()` writes a checkpoint at the current step and returns the step: TensorFlow's handler calls it
  at the agreed step (multi-worker, TPU).
  """

  def __init__(self, strategy: tf.distribute.Strategy, save: Callable[[], int] | None = None):
    self._strategy, self._save = strategy, save
    self._received: int | None = None
    self._previous: dict[int, object] = {}
    self.multi_worker = _multi_worker(strategy)
    self._agree = tf.function(self._agree_fn) if self.multi_worker else None
    self._coordinated = self.multi_worker or isinstance(
        strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))
    self.handler: tf.distribute.experimental.PreemptionCheckpointHandler | None = None
    self.saved_step: int | None = None  # the step of the checkpoint the handler's save wrote
    self._scratch: str | None = None
    self._scope = contextlib.ExitStack()

  @property
  def received(self) -> bool:
    return self._received is not None

  def __enter__(self) -> PreemptionWatcher:
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
      for sig in _SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    if self._coordinated and self._save is not None:
      self._scratch = tempfile.mkdtemp(prefix="occam-preemption-")
      config = tf.distribute.experimental.TerminationConfig(
          termination_watcher_fn=lambda: self.received, exit_fn=self._exit, grace_period=0,
          save_fn=self._save_agreed)
      self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
          self._strategy.cluster_resolver, tf.train.Checkpoint(), os.path.join(self._scratch, "unused"),
          config)
      self._scope.enter_context(self.handler.watch_preemption_scope())  # a TPU's preemption OpError
    logging.info("preemption: SIGTERM or SIGINT stops training at a checkpoint %s",
                 "after the running compiled call" if self.handler is None else
                 "at the step every worker agrees on (TensorFlow's PreemptionCheckpointHandler)")
    return self

  def __exit__(self, *exc_info) -> bool:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
    try:
      return bool(self._scope.__exit__(*exc_info))
    except StopAgreed as stop:  # a TPU's preemption error, turned into a checkpoint by the handler
      raise self.stopped(stop.step) from None
    finally:
      if self._scratch:
        shutil.rmtree(self._scratch, ignore_errors=True)

  def _save_agreed(self) -> None:
    self.saved_step = self._save()
    step = self.saved_step
    logging.warning("preemption: every worker stopped at step %d; checkpoint ckpt-%d written", step, step)

  def _exit(self) -> None:
    raise StopAgreed(self.saved_step)

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning("received %s: finishing the current compiled call, then checkpointing and exiting",
                    signal.Signals(signum).name)
    self._received = signum
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def _agree_fn(self, value: tf.Tensor) -> tf.Tensor:
    per_replica = self._strategy.run(lambda: tf.identity(value))
    return self._strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  def mean_over_workers(self, value: int) -> int:
    """`value`, or under multi-worker the mean over all replicas of every worker's `value` (the same on
    every worker: a sum of small integers is exact)."""
    if self._agree is None:
      return value
    total = float(self._agree(tf.constant(float(value))))
    return max(1, int(total // self._strategy.num_replicas_in_sync))

  def loop_calls(self) -> LoopCalls:
    """How the runner splits its loops into calls (see `LoopCalls`)."""
    return LoopCalls(self)

  def should_stop(self) -> bool:
    """True once any process of the job received a signal (a collective under multi-worker)."""
    if self._agree is None:
      return self.received
    return float(self._agree(tf.constant(float(self.received)))) > 0

  def stopped(self, step: int) -> Preempted | Interrupted:
    """The error to raise once the checkpoint at `step` is written: `Interrupted` if this process got a
    SIGINT, else `Preempted` (a SIGTERM, or another worker's signal)."""
    return Interrupted(step) if self._received == signal.SIGINT else Preempted(step)


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
  return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())
