"""What a non-finite training step does: stop with a precise error, or restore and slow down.

The compiled host loop reports the first step whose data loss, penalty or gradient norm was not
finite (see `programs.TrainProgram`). `NonFiniteRecovery` owns the policy
(`Trainer.on_nonfinite`): 'stop' raises `NonFiniteError` naming the quantities and the step and
leaves the last good checkpoint untouched; 'restore' reloads the last good checkpoint and multiplies
the learning rate by `restore_lr_factor`, at most `max_restores` times per process.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf
from absl import logging

from trainer.runtime.checkpointing import Checkpointer

EXIT_NONFINITE = 3


class NonFiniteError(RuntimeError):
  """A loss, penalty or gradient went non-finite; the message names which, and at which step."""


class NonFiniteRecovery:
  """The `on_nonfinite` policy, with the state it needs (restores done so far in this process)."""

  def __init__(self, *, policy: str, max_restores: int, lr_factor: float, checkpointer: Checkpointer,
               learning_rate_scale: tf.Variable, clear_flags: Callable[[], None]):
    self._policy, self._max_restores, self._lr_factor = policy, max_restores, lr_factor
    self._checkpointer, self._scale, self._clear_flags = checkpointer, learning_rate_scale, clear_flags
    self._restores = 0

  def on_start(self, step: int, restored: str | None) -> None:
    """Under 'restore', a fresh run saves its start, so a divergence before any checkpoint can restore."""
    if self._policy == "restore" and restored is None:
      self._checkpointer.save(step)

  def __call__(self, step: int, nonfinite: Sequence[str]) -> None:
    """Raises `NonFiniteError`, or (policy 'restore') reloads the last good checkpoint at a lower rate."""
    what = f"non-finite {', '.join(nonfinite)} at step {step}"
    latest = (self._checkpointer.candidates() or [None])[0]
    if self._policy == "stop" or self._restores >= self._max_restores or latest is None:
      reason = (f"after {self._restores} restores" if self._policy == "restore" and latest else
                "Trainer.on_nonfinite='stop'" if self._policy == "stop" else "no checkpoint to restore")
      raise NonFiniteError(f"{what} ({reason}). Training stopped; the last good checkpoint "
                           f"({latest or 'none yet'}) is untouched. Lower the learning rate, check the data, "
                           "or set Trainer.on_nonfinite='restore'.")
    restored = self._checkpointer.restore_latest()
    self._scale.assign(self._scale * self._lr_factor)
    self._clear_flags()
    self._restores += 1
    logging.warning("%s: restored %s and scaled the learning rate by %g (restore %d of %d)", what, restored,
                    self._lr_factor, self._restores, self._max_restores)
