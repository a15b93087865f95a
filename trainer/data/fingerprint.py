"""Refuses to resume a run on data that changed since it started: a cheap fingerprint of each split.

A resumed run continues its data stream at the step it stopped (see `trainer.data.pipeline`); that
is only the same experiment if the data are the same. The first start of a run records, per split,
what can be known without reading the data: its kind, example count where known, per-example shape
and dtypes, and for data on disk every file with its size (and record count where counted); arrays
also get a digest of their labels and of at most `SAMPLED_ROWS` evenly spaced feature rows (a
bounded read, however large the array). A restart compares the splits it built with the record and
refuses any difference (which split, which file, what changed) unless the user says the change is
intended (`--allow_data_change`); the record then describes the new data. A run directory from
before fingerprints resumes and gets one. Like the config guard, the check only applies once a
checkpoint exists: before that there is nothing to keep.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from trainer.common import files
from trainer.data.arrays import ArrayData
from trainer.data.sources import RecordData
from trainer.data.splits import Splits
from trainer.runtime import checkpointing

FINGERPRINT_FILE = "data_fingerprint.json"
SCHEMA = 1
SAMPLED_ROWS = 1024  # feature rows of an array split that enter its digest


class DataChangedError(ValueError):
  """The data differ from those the run was started on (or the record of them is unreadable)."""


def _file_size(path: str) -> int | None:
  try:
    return tf.io.gfile.stat(path).length
  except tf.errors.OpError:
    return None


def _array_digest(split: ArrayData) -> str:
  """sha256 of the labels and of at most SAMPLED_ROWS evenly spaced feature rows (with the shapes)."""
  digest = hashlib.sha256()
  for array in (split.labels, split.features):
    digest.update(repr((array.dtype.str, array.shape)).encode())
  digest.update(np.ascontiguousarray(split.labels).tobytes())
  rows = np.unique(np.linspace(0, split.num_examples - 1, min(SAMPLED_ROWS, split.num_examples)).astype(int))
  digest.update(np.ascontiguousarray(split.features[rows]).tobytes())
  return digest.hexdigest()


def split_fingerprint(split) -> dict:
  """What identifies one split without reading it (see the module docstring); JSON-serializable."""
  record = {"examples": split.known_size,
            "features": f"{split.features_dtype.name}{list(split.example_shape)}",
            "labels": f"{split.labels_dtype.name}{list(split.label_shape)}"}
  if isinstance(split, RecordData):
    counts = split.file_counts or (None,) * len(split.files)
    record["kind"] = "records"
    record["files"] = {path: {"bytes": _file_size(path), "records": count}
                       for path, count in zip(split.files, counts)}
  elif isinstance(split, ArrayData):
    record["kind"] = "array"
    record["digest"] = _array_digest(split)
    path = getattr(split.features, "filename", None) if split.memory_mapped else None
    record["files"] = {path: {"bytes": _file_size(path), "records": None}} if path else {}
  else:
    record["kind"] = "indexed"
  return record


def fingerprint(splits: Splits) -> dict:
  """The fingerprint of every split of `splits`, as stored in model_dir/data_fingerprint.json."""
  return {"schema": SCHEMA, "name": splits.name, "num_classes": splits.num_classes,
          "splits": {name: split_fingerprint(split) for name, split in splits.named_splits()}}


def _changed(what: str, old, new) -> list[str]:
  return [f"{what} {new}, was {old}"] if old is not None and new is not None and old != new else []


def _split_differences(name: str, old: dict, new: dict) -> list[str]:
  lines = []
  for key, what in (("kind", "kind"), ("examples", "examples"), ("features", "features"),
                    ("labels", "labels")):
    lines += _changed(what, old.get(key), new.get(key))
  if old.get("digest") and new.get("digest") and old["digest"] != new["digest"]:
    lines.append("contents differ (digest of the labels and sampled feature rows)")
  old_files, new_files = old.get("files", {}), new.get("files", {})
  for path in sorted(set(old_files) | set(new_files)):
    if path not in new_files:
      lines.append(f"file {path} is gone")
    elif path not in old_files:
      lines.append(f"new file {path} ({new_files[path]['bytes']} bytes)")
    else:
      lines += _changed(f"{path}: bytes", old_files[path].get("bytes"), new_files[path].get("bytes"))
      lines += _changed(f"{path}: records", old_files[path].get("records"), new_files[path].get("records"))
  return [f"{name}: {line}" for line in lines]


def differences(old: dict, new: dict) -> list[str]:
  """One line per difference between two fingerprints, each naming the split (and file)."""
  lines = _changed("num_classes", old.get("num_classes"), new.get("num_classes"))
  for name, split in new["splits"].items():
    lines += _split_differences(name, old.get("splits", {}).get(name, {}), split)
  return lines


def check(model_dir: str, splits: Splits, *, allow_change: bool) -> None:
  """Refuses (or, allowed, logs) a resume on data that differ from the recorded fingerprint.

  No checkpoint: nothing to check. No record (a run directory from before fingerprints): resumes,
  and `record` writes one. A record that cannot be read cannot vouch for the data and is refused
  like a change.
  """
  if not checkpointing.checkpoint_steps(os.path.join(model_dir, "checkpoints")):
    return
  path = os.path.join(model_dir, FINGERPRINT_FILE)
  if not tf.io.gfile.exists(path):
    logging.info("%s has no %s (written before fingerprints); recording the current data", model_dir,
                 FINGERPRINT_FILE)
    return
  try:
    with tf.io.gfile.GFile(path) as f:
      stored = json.load(f)
    changes = differences(stored, fingerprint(splits))
  except (ValueError, KeyError, AttributeError, TypeError, tf.errors.OpError) as error:
    changes = [f"{path} is damaged ({type(error).__name__}: {str(error).strip().splitlines()[0]}), so the "
               "data cannot be checked against those the run started on"]
  if not changes:
    return
  if not allow_change:
    raise DataChangedError(
        f"--model_dir={model_dir} was trained on other data ({FINGERPRINT_FILE}); resuming would silently "
        f"continue on a different stream: {'; '.join(changes)}. Restore the data, use a fresh --model_dir, "
        "or pass --allow_data_change if the change is intended (it then becomes the recorded data).")
  logging.warning("continuing %s on changed data (--allow_data_change): %s", model_dir, "; ".join(changes))


def record(model_dir: str, splits: Splits) -> None:
  """Stores the data's fingerprint as the run's reference (atomically), once the run has started."""
  files.write_json(os.path.join(model_dir, FINGERPRINT_FILE), fingerprint(splits))
