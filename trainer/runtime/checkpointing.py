"""Checkpoints: what is saved, where, and how a resume checks that it fits.

A checkpoint holds what the Trainer gives it: the step counter, the model and every model variable
(the dropout RNG state included), the optimizer (slots, iteration count), the learning-rate scale,
the initial weights and the early-stopping state. The data position is the step itself (see
`input_pipeline`), so nothing else is needed to continue exactly.
TensorFlow writes a checkpoint's data under a temporary name and its index last, so a save killed
midway leaves no index and is not a candidate. A checkpoint that is there but unreadable (a missing,
empty, truncated or corrupted index or data file) is reported and skipped: every tensor is read once
before anything is assigned, so the restore falls back to the next older one with the variables
untouched. Candidates are found by listing the directory (never by a glob on the user's path, which may
hold `[`, `*` or `?`), through `tf.io.gfile`, so remote directories (`gs://`, `ram://`) work alike. The
`checkpoint` state file only serves TensorFlow's `CheckpointManager` (which deletes old checkpoints): a
damaged one is rewritten from the checkpoints found.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

import tensorflow as tf
from absl import logging

EXIT_WRITE_FAILED = 74  # EX_IOERR (sysexits.h): "an error occurred while doing I/O on some file"


# What a write that cannot complete raises (a full disk, a permission, a vanished directory); not the
# errors of a lost peer in a collective save (`strategy.PEER_LOST_ERRORS`), which have their own status.
WRITE_ERRORS = (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError, tf.errors.NotFoundError,
                tf.errors.FailedPreconditionError, tf.errors.DataLossError, tf.errors.UnknownError, OSError)


class ResumeError(RuntimeError):
  """The checkpoint in model_dir cannot be restored into this run's model/optimizer."""


class WriteError(RuntimeError):
  """Something a run keeps could not be written (a full disk, a lost filesystem); nothing was left
  half-written, and the earlier checkpoints are intact. The message is one line naming the directory."""


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
    return [os.path.join(self.directory, f"ckpt-{step}") for step in checkpoint_steps(self.directory)]

  def close(self) -> None:
    """Removes a non-chief worker's scratch checkpoints."""
    if self._scratch:
      shutil.rmtree(self._scratch, ignore_errors=True)

  def restore_latest(self, *, before: int | None = None) -> str | None:
    """Restores the newest readable checkpoint (of a step < `before`, if given), if any.

    An unreadable checkpoint is skipped with a warning; one that reads but does not fit this run's
    model/optimizer raises `ResumeError` naming it (falling back would silently train another model).
    """
    candidates = [path for path in self.candidates() if before is None or step_of(path) < before]
    for path in candidates:
      try:
        self._restore(path)
      except ResumeError:
        raise
      except Exception as error:  # damage raises OpError, IndexError, ValueError, ...
        logging.warning("checkpoint %s is unreadable (%s: %s); falling back to the previous one", path,
                        type(error).__name__, _first_line(error))
        continue
      with_data = set(checkpoint_steps(self.directory, suffix=r"\.data-.*"))
      unfinished = [s for s in with_data - set(checkpoint_steps(self.directory)) if s > step_of(path)]
      if path != candidates[0] or unfinished:
        logging.warning("fell back to %s%s", os.path.basename(path),
                        f" (ckpt-{max(unfinished)} has data but no index: an unfinished save or a lost index)"
                        if unfinished else "")
      return path
    if candidates:
      raise ResumeError(f"no readable checkpoint in {self.directory} (tried {', '.join(candidates)}); "
                        "move the directory aside to start afresh")
    return None

  def _restore(self, path: str) -> None:
    reader = tf.compat.v1.train.NewCheckpointReader(path)  # Every tensor once: damage fails here.
    for key in reader.get_variable_to_shape_map():
      reader.get_tensor(key)
    try:
      self._checkpoint.restore(path).assert_existing_objects_matched()
    except (ValueError, AssertionError) as error:
      raise ResumeError(
          f"checkpoint {path} does not fit this run's model/optimizer ({_first_line(error)}). "
          f"It was written by a different configuration: use a fresh --model_dir, or the gin config that "
          f"wrote it ({os.path.join(os.path.dirname(self.directory), 'operative_config.gin')}).") from error

  def save(self, step: int) -> str:
    """Writes checkpoint `step`; raises `WriteError` if it cannot, after removing what it began."""
    try:
      if self._manager is None:
        if not self._is_chief:
          self._scratch = tempfile.mkdtemp(prefix="occam-worker-checkpoints-")
        else:
          self._repair_state()
        self._manager = tf.train.CheckpointManager(self._checkpoint, self._scratch or self.directory,
                                                   max_to_keep=self._keep if self._is_chief else 1,
                                                   step_counter=self._step, checkpoint_name="ckpt")
      return self._manager.save(checkpoint_number=step)
    except WRITE_ERRORS as error:  # ResourceExhaustedError on a full disk, ...
      directory = self._scratch or self.directory
      self._remove_unfinished(directory, step)
      raise WriteError(f"cannot write checkpoint ckpt-{step} to {directory}: {write_failure(error)}; "
                       "nothing of it was kept and the earlier checkpoints are intact: free space and rerun "
                       "the same command to resume") from None

  @staticmethod
  def _remove_unfinished(directory: str, step: int) -> None:
    """Removes the temporary directory and the files of checkpoint `step` if its save did not finish
    (a finished one has its index; only the state file may be missing then, and it is rebuilt)."""
    try:
      temporary = os.path.join(directory, f"ckpt-{step}_temp")
      if tf.io.gfile.exists(temporary):
        tf.io.gfile.rmtree(temporary)
      if step not in checkpoint_steps(directory):
        for name in tf.io.gfile.listdir(directory):
          if re.fullmatch(rf"ckpt-{step}\..*", name):
            tf.io.gfile.remove(os.path.join(directory, name))
    except (tf.errors.OpError, OSError) as error:
      logging.warning("could not remove the unfinished checkpoint ckpt-%d in %s: %s", step, directory,
                      write_failure(error))

  def _repair_state(self) -> None:
    """Rewrites a damaged or missing `checkpoint` state file from the checkpoints in the directory.

    `CheckpointManager` reads it when created: an empty file raises, a garbled one is ignored (and the
    manager would then never delete the older checkpoints).
    """
    candidates = self.candidates()
    try:
      state = tf.train.get_checkpoint_state(self.directory)
    except Exception:  # ValueError, OpError, protobuf parse errors
      state = None
    if candidates and (state is None or not state.all_model_checkpoint_paths):
      logging.warning("rewriting the checkpoint state file of %s from the checkpoints found", self.directory)
      now = time.time()  # timestamps after `last_preserved` make the manager delete them in turn
      tf.compat.v1.train.update_checkpoint_state(
          self.directory, candidates[0], all_model_checkpoint_paths=list(reversed(candidates)),
          all_model_checkpoint_timestamps=[now] * len(candidates), last_preserved_timestamp=now - 1)


def step_of(path: str) -> int:
  """The step of a checkpoint prefix (`.../ckpt-120` -> 120)."""
  return int(path.rsplit("-", 1)[1])


def checkpoint_steps(directory: str, *, suffix: str = r"\.index") -> list[int]:
  """Distinct steps of the `ckpt-<step><suffix>` files in `directory` (by default: the checkpoints, which
  have an index file), newest first; [] if none.

  Lists the directory through `tf.io.gfile` rather than globbing, so that any directory name works.
  """
  if not tf.io.gfile.isdir(directory):
    return []
  steps = {int(match.group(1)) for match in
           (re.fullmatch(rf"ckpt-(\d+){suffix}", name) for name in tf.io.gfile.listdir(directory)) if match}
  return sorted(steps, reverse=True)


def write_failure(error: Exception) -> str:
  """Why a write failed, in a few words: 'No space left on device' rather than TensorFlow's op text."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  line = re.sub(r"\s*\[Op:\w+\].*$", "", _first_line(error))
  return line.rsplit("; ", 1)[-1].strip() or type(error).__name__


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
