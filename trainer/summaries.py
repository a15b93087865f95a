"""TensorBoard event writers for `model_dir/train` and `model_dir/eval`.

Tags are public interface (README, "TensorBoard tags"); every scalar goes through `write_scalars`
with an explicit tag so the namespaces (`train/`, `eval/`, `penalty/`, `optimizer/`, `perf/`, ...)
stay stable. Non-chief workers pass `enabled=False` and write nothing.
"""

from __future__ import annotations

import os
from typing import Mapping

import tensorflow as tf


class SummaryWriters:
  """One writer per event directory, created lazily so that a failed start writes no event file."""

  def __init__(self, model_dir: str, *, enabled: bool = True):
    self._model_dir = model_dir
    self._enabled = enabled
    self._writers: dict[str, tf.summary.SummaryWriter] = {}

  def _writer(self, name: str) -> tf.summary.SummaryWriter:
    if name not in self._writers:
      self._writers[name] = tf.summary.create_file_writer(os.path.join(self._model_dir, name))
    return self._writers[name]

  def write_scalars(self, name: str, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    with self._writer(name).as_default(step=step):
      for tag, value in scalars.items():
        tf.summary.scalar(tag, value)

  def write_text(self, name: str, step: int, tag: str, text: str) -> None:
    """Markdown text; gin configs are shown verbatim in a code block."""
    if not self._enabled:
      return
    with self._writer(name).as_default(step=step):
      tf.summary.text(tag, "```\n" + text + "\n```")

  def flush(self) -> None:
    for writer in self._writers.values():
      writer.flush()
