"""What a non-finite training step does: stop with a precise error, or restore and slow down.

The compiled host loop reports the first step whose data loss, penalty or gradient norm was not
finite (see `programs.TrainProgram`). `NonFiniteRecovery` owns the policy
(`Trainer.on_nonfinite`): 'stop' raises `NonFiniteError` naming the quantities and the step and
leaves the last good checkpoint untouched; 'restore' reloads the last good checkpoint and multiplies
the learning rate by `restore_lr_factor`, at most `max_restores` times per process.

A checkpoint's losses being finite does not make its weights good: a learning-rate spike on the last
step of a loop saves weights that diverge only in the next loop. So a checkpoint that was restored
and diverged again before any newer checkpoint was saved counts as bad: the next restore goes to the
checkpoint before it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf
from absl import logging

from trainer.runtime import checkpointing
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
    self._restored: str | None = None  # the checkpoint of the last restore, until a newer one is saved

  def on_start(self, step: int, restored: str | None) -> None:
    """Under 'restore', a fresh run saves its start, so a divergence before any checkpoint can restore."""
    if self._policy == "restore" and restored is None:
      self._checkpointer.save(step)

  def __call__(self, step: int, nonfinite: Sequence[str]) -> None:
    """Raises `NonFiniteError`, or (policy 'restore') reloads the last good checkpoint at a lower rate."""
    what = f"non-finite {', '.join(nonfinite)} at step {step}"
    candidates = self._checkpointer.candidates()
    # Restoring `self._restored` did not help if the run diverged again before saving a newer checkpoint.
    before = (checkpointing.step_of(self._restored)
              if self._restored is not None and candidates and candidates[0] == self._restored else None)
    good = [path for path in candidates if before is None or checkpointing.step_of(path) < before]
    latest = good[0] if good else None
    if self._policy == "stop" or self._restores >= self._max_restores or latest is None:
      reason = (f"after {self._restores} restores" if self._policy == "restore" and latest else
                "Trainer.on_nonfinite='stop'" if self._policy == "stop" else
                f"no checkpoint before {self._restored}, which diverged again" if before is not None else
                "no checkpoint to restore")
      raise NonFiniteError(f"{what} ({reason}). Training stopped; the last good checkpoint "
                           f"({latest or 'none yet'}) is untouched. Lower the learning rate, check the data, "
                           "or set Trainer.on_nonfinite='restore'.")
    if before is not None:
      logging.warning("%s diverged again after it was restored: falling back to an older checkpoint",
                      self._restored)
    scale = self._scale.numpy()
    self._restored = self._checkpointer.restore_latest(before=before)
    # An older checkpoint holds an older (higher) scale: the reductions so far still apply.
    self._scale.assign(min(scale, self._scale.numpy()) * self._lr_factor)
    self._clear_flags()
    self._restores += 1
    logging.warning("%s: restored %s and scaled the learning rate by %g (restore %d of %d)", what,
                    self._restored, self._lr_factor, self._restores, self._max_restores)
