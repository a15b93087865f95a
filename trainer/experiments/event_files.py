"""A run's scalar series read straight from its TensorBoard event files, without TensorFlow.

`occam-report` and the DataFrame loaders (`trainer.experiments.results`) read runs through this
module, so a report over a sweep costs no TensorFlow import (several seconds per process). It reads
the float scalars of one event directory as the TensorBoard server shows them (its reader is
`plugin_event_accumulator`, which the tests compare this one with):

* the directory's files whose name contains `tfevents`, in name order, each a sequence of records
  (TFRecord framing: little-endian uint64 length, 4-byte length CRC, the serialized `Event`, 4-byte
  data CRC);
* the first `SessionLog(START)` event marks a session's start; each later one, at step s, drops every
  value read so far at a step >= s. That is how a resumed run hides what the killed run logged after
  its checkpoint (Occam writes the event twice, see
  `trainer.metrics.summaries.SummaryWriters.purge_after`). The server applies this rule to files of
  TF 2's writers (`file_version` 2), the only ones Occam writes;
* a tag counts as a scalar when every value written under it is a float tensor of shape [] (or a
  legacy `simple_value`); texts, histograms and layouts are left out. A step written twice (a rerun
  of a finished run evaluates its last step again) appears twice.

The CRCs are not checked: a record cut short (a run still writing) or one that does not parse ends
the file's reading, as TensorBoard's reader stops at a damaged record.
"""

from __future__ import annotations

import os
import struct
from typing import Iterator

import numpy as np
from google.protobuf import message
from tensorboard.compat.proto import event_pb2, types_pb2

Series = list[tuple[int, float]]
_HEADER, _FOOTER = 12, 4  # uint64 length + its masked CRC32C; the data's masked CRC32C
_FLOAT_TYPES = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
                types_pb2.DT_HALF: np.float16}


def read_scalars(event_dir: str) -> dict[str, Series]:
  """{tag: [(step, value), ...]} of every float scalar in `event_dir`'s event files ({} if no such dir).

  Values are in the order written, after resume purges; a step written twice appears twice.
  """
  if not os.path.isdir(event_dir):
    return {}
  series: dict[str, Series] = {}
  not_scalar: set[str] = set()
  session_started = False
  names = sorted(name for name in os.listdir(event_dir) if "tfevents" in name)
  for name in names:
    for event in _events(os.path.join(event_dir, name)):
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        if session_started:  # a restart: what was logged from its step on is out of date
          for tag, values in series.items():
            series[tag] = [(step, value) for step, value in values if step < event.step]
        session_started = True
      for value in event.summary.value:
        number = _float_scalar(value)
        if number is None:
          not_scalar.add(value.tag)
        else:
          series.setdefault(value.tag, []).append((event.step, number))
  return {tag: values for tag, values in series.items() if tag not in not_scalar}


def _events(path: str) -> Iterator[event_pb2.Event]:
  """The `Event` records of one file, up to its end or its first incomplete or unreadable record."""
  with open(path, "rb") as file:
    while True:
      header = file.read(_HEADER)
      if len(header) < _HEADER:
        return
      (length,) = struct.unpack("<Q", header[:8])
      data = file.read(length)
      if len(data) < length or len(file.read(_FOOTER)) < _FOOTER:
        return
      try:
        yield event_pb2.Event.FromString(data)
      except message.DecodeError:
        return


def _float_scalar(value) -> float | None:
  """The number a summary value holds when it is a float scalar, else None."""
  if value.HasField("tensor"):
    tensor = value.tensor
    dtype = _FLOAT_TYPES.get(tensor.dtype)
    if dtype is None or tensor.tensor_shape.dim:
      return None
    if tensor.tensor_content:
      return float(np.frombuffer(tensor.tensor_content, dtype)[0])
    if tensor.dtype == types_pb2.DT_HALF:  # half_val holds the float16 bit patterns
      return float(np.array(tensor.half_val[0], np.uint16).view(np.float16))
    values = tensor.double_val if tensor.dtype == types_pb2.DT_DOUBLE else tensor.float_val
    return float(dtype(values[0])) if values else None
  if value.HasField("simple_value"):
    return float(value.simple_value)
  return None
