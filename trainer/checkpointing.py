"""Checkpoints: what is saved, where, and how a resume checks that it fits.

A checkpoint holds the step counter, the model and the optimizer (slots, iteration count). The data
position is the step itself (see `input_pipeline`), so nothing else is needed to continue exactly.
TensorFlow writes the data and index files first and replaces the `checkpoint` state file last, so
an interrupted save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import os

import tensorflow as tf


class ResumeError(RuntimeError):
  """The checkpoint in model_dir cannot be restored into this run's model/optimizer."""


class Checkpointer:
  """Saves every `every` steps (and on demand), keeps the newest `keep`, restores the latest."""

  def __init__(self, directory: str, *, step: tf.Variable, keep: int, **trackables):
    if keep < 1:
      raise ValueError(f"Trainer.keep_checkpoints must be >= 1, got {keep}")
    self.directory = directory
    self._checkpoint = tf.train.Checkpoint(step=step, **trackables)
    self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=keep,
                                               step_counter=step, checkpoint_name="ckpt")

  @property
  def latest(self) -> str | None:
    return self._manager.latest_checkpoint

  def restore_latest(self) -> str | None:
    """Restores the newest checkpoint if any; raises `ResumeError` naming it when it does not fit."""
    path = self.latest
    if path is None:
      return None
    try:
      self._checkpoint.restore(path).assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as error:
      raise ResumeError(
          f"checkpoint {path} does not fit this run's model/optimizer ({_first_line(error)}). "
          f"It was written by a different configuration: use a fresh --model_dir, or the gin config "
          f"that wrote it ({os.path.join(os.path.dirname(self.directory), 'operative_config.gin')}).") from error
    return path

  def save(self, step: int) -> str:
    return self._manager.save(checkpoint_number=step)


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
