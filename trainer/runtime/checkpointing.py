"""Checkpoints: what is saved, where, and how a resume checks that it fits.

A checkpoint holds what the Trainer gives it: the step counter, the model and every model variable
(the dropout RNG state included), the optimizer (slots, iteration count), the learning-rate scale,
the initial weights and the early-stopping state. The data position is the step itself (see
`input_pipeline`), so nothing else is needed to continue exactly.
TensorFlow writes a checkpoint's data under a temporary name and its index last, so a save killed
midway leaves no index and is not a candidate. A checkpoint that is there but unreadable (a truncated
or corrupted file) is reported and skipped: the restore falls back to the next older one.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile

import tensorflow as tf
from absl import logging


class ResumeError(RuntimeError):
  """The checkpoint in model_dir cannot be restored into this run's model/optimizer."""


class Checkpointer:
  """Saves on demand, keeps the newest `keep`, restores the latest.

  Under MultiWorkerMirroredStrategy every worker must take part in a save (it is a collective), but
  only the chief's copy is real: other workers write to a private scratch directory, removed by
  `close()`, and all workers restore from the chief's `directory`.
  """

  def __init__(self, directory: str, *, step: tf.Variable, keep: int, is_chief: bool = True, **trackables):
    if keep < 1:
      raise ValueError(f"Checkpointer: keep must be >= 1, got {keep}")
    self.directory = directory
    self._is_chief, self._keep, self._step = is_chief, keep, step
    self._checkpoint = tf.train.Checkpoint(step=step, **trackables)
    self._scratch: str | None = None
    self._manager: tf.train.CheckpointManager | None = None  # created by the first save

  def candidates(self) -> list[str]:
    """Checkpoint prefixes in the chief's directory, newest step first (found by their index files)."""
    steps = []
    for index in glob.glob(os.path.join(self.directory, "ckpt-*.index")):
      match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
      if match:
        steps.append(int(match.group(1)))
    return [os.path.join(self.directory, f"ckpt-{step}") for step in sorted(steps, reverse=True)]

  def close(self) -> None:
    """Removes a non-chief worker's scratch checkpoints."""
    if self._scratch:
      shutil.rmtree(self._scratch, ignore_errors=True)

  def restore_latest(self) -> str | None:
    """Restores the newest readable checkpoint, if any.

    An unreadable checkpoint is skipped with a warning; one that reads but does not fit this run's
    model/optimizer raises `ResumeError` naming it (falling back would silently train another model).
    """
    candidates = self.candidates()
    for path in candidates:
      try:
        self._restore(path)
        return path
      except tf.errors.OpError as error:
        logging.warning("checkpoint %s is unreadable (%s); falling back to the previous one", path,
                        _first_line(error))
    if candidates:
      raise ResumeError(f"no readable checkpoint in {self.directory} (tried {', '.join(candidates)}); "
                        "move the directory aside to start afresh")
    return None

  def _restore(self, path: str) -> None:
    tf.train.load_checkpoint(path)  # Reads the index: an unreadable checkpoint fails here, untouched.
    try:
      self._checkpoint.restore(path).assert_existing_objects_matched()
    except (ValueError, AssertionError) as error:
      raise ResumeError(
          f"checkpoint {path} does not fit this run's model/optimizer ({_first_line(error)}). "
          f"It was written by a different configuration: use a fresh --model_dir, or the gin config that "
          f"wrote it ({os.path.join(os.path.dirname(self.directory), 'operative_config.gin')}).") from error

  def save(self, step: int) -> str:
    if self._manager is None:
      if not self._is_chief:
        self._scratch = tempfile.mkdtemp(prefix="occam-worker-checkpoints-")
      self._manager = tf.train.CheckpointManager(self._checkpoint, self._scratch or self.directory,
                                                 max_to_keep=self._keep if self._is_chief else 1,
                                                 step_counter=self._step, checkpoint_name="ckpt")
    return self._manager.save(checkpoint_number=step)


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
