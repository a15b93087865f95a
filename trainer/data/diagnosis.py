"""Names the file and record behind an input error, in one line, instead of TensorFlow's text.

A split is checked when it is opened (each TFRecord file's first record, an array's labels), but a
bad record deep in a stream only shows when the pipeline reaches it: as a multi-line TensorFlow error
raised from the iterator, mid-run, that names an op rather than a file. Neither the order nor the
values of any stream are touched to track where each record came from; instead, when a pipeline
fails, `locate` finds the culprit again after the fact: a deleted file, then per file a fast pass
(every record read and parsed in the graph) and, in the first file that fails, a record-by-record
pass that gives the record's index. Readers of other splits (memory-mapped rows, TFDS examples by
index) name their file and index in the error they raise (`sources.input_error`).
A run stopped by bad data exits with `EXIT_BAD_DATA`; its last checkpoint is untouched.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import tensorflow as tf

from trainer.data.sources import INPUT_ERROR_MARKER, RecordData
from trainer.data.splits import Splits

EXIT_BAD_DATA = 65  # EX_DATAERR (sysexits.h): "the input data was incorrect in some way"


# What a bad record or a lost file raises; not, e.g., the UnavailableError of a lost peer (a multi-worker
# loop's error names its iterator too).
_READ_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError)


class InputError(RuntimeError):
  """Training or evaluation stopped at bad data; the message is one line naming the file (and record)."""


def is_input_error(error: BaseException) -> bool:
  """Whether an error came from reading data: a reader named bad data, an iterator or dataset op failed
  (named on the message's first line or its `[[...]]` lines of failed ops, not in a stack trace), or a
  record is damaged."""
  text = str(error)
  failed_ops = [line for number, line in enumerate(text.splitlines()) if number == 0 or "[[" in line]
  return (INPUT_ERROR_MARKER in text or isinstance(error, tf.errors.DataLossError)
          or (isinstance(error, _READ_ERRORS)
              and any(re.search("Iterator|Dataset", line) for line in failed_ops)))


def reason(error: BaseException) -> str:
  """The informative part of a TensorFlow error's message, on one line.

  Keeps what a reader raised (after `INPUT_ERROR_MARKER`), or TensorFlow's first line without its
  function and iterator names (`{{function_node ...}}`, `... with iterator: Iterator::...: `).
  """
  text = str(error)
  if INPUT_ERROR_MARKER in text:
    return text.split(INPUT_ERROR_MARKER, 1)[1].splitlines()[0].strip()
  lines = [line for line in text.splitlines() if line.strip() and "Graph execution error" not in line]
  line = lines[0] if lines else type(error).__name__
  line = re.sub(r"\{\{[^}]*\}\}\s*", "", line)
  line = re.sub(r"^.*? with iterator: \S+: ", "", line)
  line = re.sub(r"\s*\[Op:\w+\].*$", "", line)
  assertion = re.match(r"assertion failed: \[(.*?)\] \[Condition.*?\[x [^\]]*\] \[([^\]]*)\]", line)
  if assertion:  # a tf.debugging assert: its message and the value that failed it
    line = f"{assertion.group(1)}: {assertion.group(2)}".replace("\\'", "'")
  return line.strip().rstrip(".") or type(error).__name__


def _first_failure(path: str, parse) -> tuple[int, BaseException | None]:
  """(index, error) of the first record of `path` that does not read (or parse); (count, None) if none."""
  index = 0
  try:
    for _ in _records(path, parse):
      index += 1
  except tf.errors.OpError as error:
    return index, error
  return index, None


def _records(path: str, parse) -> tf.data.Dataset:
  records = tf.data.TFRecordDataset(path)
  return records.map(parse) if parse is not None else records


def bad_record(files: Sequence[str], parse=None) -> str | None:
  """`'<file>: record <i>: <what>'` for the first of `files` that is gone or has a record that does not
  read (or, given the split's `parse`, does not parse as the pipeline parses it), else None. Reads
  every file until the culprit, in the graph; only the culprit is read record by record."""
  for path in files:
    if not tf.io.gfile.exists(path):
      return f"{path}: the file is gone (deleted or moved during the run?)"
    try:
      _records(path, parse).reduce(np.int64(0), lambda count, *_: count + 1)
    except tf.errors.OpError:
      index, error = _first_failure(path, parse)
      if error is not None:
        return f"{path}: record {index}: {reason(error)}"
  return None


def culprit(split, error: BaseException) -> str:
  """One line for an error from reading `split`: its bad file and record if it is streamed, else the
  informative part of `error` (where other readers name their file and index)."""
  found = bad_record(split.files, split.parse) if isinstance(split, RecordData) else None
  return found or reason(error)


def locate(splits: Splits, error: BaseException) -> str | None:
  """One line naming the split and file (and record) behind an input error, or None if `error` is
  not one. Streamed splits are searched for the culprit; other readers named it in `error`."""
  if not is_input_error(error):
    return None
  for name, split in splits.named_splits():
    found = bad_record(split.files, split.parse) if isinstance(split, RecordData) else None
    if found:
      return f"{name} data ({splits.name}): {found}"
  return f"{splits.name} data: {reason(error)}"
