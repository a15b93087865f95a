"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

The text goes to `<path>.tmp` first and is renamed over `path`, through `tf.io.gfile` so that the
same code writes local paths and remote ones (`gs://`, `ram://`). A failed write (a full disk) removes
its temporary.
"""

from __future__ import annotations

import json

import tensorflow as tf


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (replacing an existing file)."""
  temporary = path + ".tmp"
  try:
    with tf.io.gfile.GFile(temporary, "w") as file:
      file.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)
  except BaseException:  # a full disk, a signal: leave no temporary behind
    if tf.io.gfile.exists(temporary):
      tf.io.gfile.remove(temporary)
    raise


def write_json(path: str, record) -> None:
  """Writes `record` as JSON to `path` atomically."""
  write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
