"""Reading a run's TensorBoard event files back, with TensorBoard's own reader (and TensorFlow).

For the tests, which check what a run wrote against it, and for texts and tag lists. `occam-report`
and the DataFrame loaders read scalars with `trainer.experiments.event_files` instead, which needs no
TensorFlow; the tests check on real runs that both read the same series. Occam writes scalars as TF2
tensor summaries, so they are read from the accumulator's tensors, not its legacy `scalars`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator


def _accumulator(event_dir: str) -> event_accumulator.EventAccumulator:
  accumulator = event_accumulator.EventAccumulator(event_dir, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def read_tags(event_dir: str) -> set[str]:
  """Every tag written to `event_dir`'s event files (scalars, texts, histograms, HParams); empty if none."""
  if not tf.io.gfile.isdir(event_dir):
    return set()
  return set(_accumulator(event_dir).Tags()["tensors"])


def read_scalars(event_dir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of every float scalar in `event_dir`'s event files ({} if no such dir)."""
  if not os.path.isdir(event_dir):
    return {}
  return float_scalars(_accumulator(event_dir))


def float_scalars(accumulator) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of the float scalar tensors a loaded TensorBoard accumulator holds
  (either of TensorBoard's accumulators: the legacy one or the server's plugin one)."""
  scalars = {}
  for tag in accumulator.Tags()["tensors"]:
    events = accumulator.Tensors(tag)
    values = [tf.make_ndarray(event.tensor_proto) for event in events]
    if all(value.shape == () and value.dtype.kind == "f" for value in values):
      scalars[tag] = [(event.step, float(value)) for event, value in zip(events, values)]
  return scalars


def read_texts(event_dir: str) -> dict[str, list[str]]:
  """{tag: [text, ...]} of the text summaries in `event_dir` (the operative config, term coverage)."""
  accumulator = _accumulator(event_dir)
  texts = {}
  for tag in accumulator.Tags()["tensors"]:
    if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "text":  # not a layout, not HParams
      continue
    values = [tf.make_ndarray(event.tensor_proto) for event in accumulator.Tensors(tag)]
    if values and values[0].dtype.kind in "OS":
      texts[tag] = [np.asarray(value).reshape(-1)[0].decode() for value in values]
  return texts
