"""Splits that are not arrays: random access by index, and sequential TFRecord shards.

Occam's input pipeline (`trainer.data.pipeline`) treats a split by how it can be read:
- random access (`ArrayData` in RAM or memory-mapped, `IndexedData` and `IndexedRecords` here): any
  example is found by its index, so the data order stays a pure function of (seed, step), every
  worker reads only its own slice of each global batch, results are replica-invariant and a resumed
  run is exact, with nothing but the step in the checkpoint;
- sequential (`RecordData` here): records are streamed from files, each worker reading its own
  share of the files; the order is a pure function of (seed, epoch, worker) and a resumed run
  replays the current epoch's record stream up to its position (see the pipeline).
Both kinds carry what the rest of the framework needs without reading the data: the example
count, the per-example shape (None where images vary in size) and the dtypes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

# Starts the message of an error a reader raises from inside the pipeline (a `tf.numpy_function`), so
# that `trainer.data.diagnosis` can find it again in TensorFlow's text.
INPUT_ERROR_MARKER = "bad input data: "


def input_error(text: str) -> ValueError:
  """The error a reader raises for data it cannot use; `text` names the file (or dataset) and index."""
  return ValueError(f"{INPUT_ERROR_MARKER}{text}")


@dataclasses.dataclass(frozen=True, eq=False)
class IndexedData:
  """A split whose examples are read one at a time by index (e.g. a TFDS `data_source`).

  Attributes:
    read: `read(index) -> (features, label)` as numpy values; called from the pipeline's threads.
    num_examples: N; indices are 0..N-1.
    example_shape: shape of one example's features; None for a dimension that varies (images of
      different sizes, which preprocessing must resize to one size before batching).
    features_dtype: np.uint8 (images) or np.float32.
    labels_dtype: np.int32 (class ids) or np.float32 (regression targets).
    label_shape: shape of one label: () for a class id.
  """

  read: Callable[[int], tuple[np.ndarray, np.ndarray]]
  num_examples: int
  example_shape: tuple
  features_dtype: np.dtype
  labels_dtype: np.dtype = np.dtype(np.int32)
  label_shape: tuple = ()

  def __post_init__(self):
    _check_kind(self)

  @property
  def known_size(self) -> int:
    return self.num_examples

  def read_tensors(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One example as tensors of the declared dtypes and shapes (read outside the graph)."""
    features, label = tf.numpy_function(
        lambda i: tuple(np.asarray(value, dtype) for value, dtype in
                        zip(self.read(int(i)), (self.features_dtype, self.labels_dtype))),
        [index], (tf.as_dtype(self.features_dtype), tf.as_dtype(self.labels_dtype)), stateful=False)
    features.set_shape(self.example_shape)
    label.set_shape(self.label_shape)
    return features, label


@dataclasses.dataclass(frozen=True, eq=False)
class IndexedRecords:
  """A split of serialized records read by index a batch at a time, parsed and decoded in the graph.

  The one Python call per batch is `read_records` (e.g. ArrayRecord's batch read, which fetches the
  records in parallel); everything after it (parsing, image decoding, augmentation) is TensorFlow,
  so only the bytes cross the GIL. This is how TFDS datasets prepared as array_record are read.

  Attributes:
    read_records: `read_records(indices) -> sequence of bytes`, the serialized records at `indices`
      (a 1-D int64 numpy array), in that order; called from the pipeline's threads.
    parse: `parse(serialized) -> (features, label)` for one record, in TensorFlow, images decoded.
    parse_encoded: like `parse` but leaving an encoded image (JPEG/PNG) as its bytes, a scalar string,
      so that a random-resized crop decodes only its window (`ImagePreprocessing.encoded_example`);
      None if the features are not encoded images.
    num_examples, example_shape, features_dtype, labels_dtype, label_shape: as for `IndexedData`.
    description: where the records come from (files, dataset), for messages.
  """

  read_records: Callable[[np.ndarray], Sequence[bytes]]
  parse: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
  num_examples: int
  example_shape: tuple
  features_dtype: np.dtype
  labels_dtype: np.dtype = np.dtype(np.int32)
  label_shape: tuple = ()
  parse_encoded: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None = None
  description: str = "records"

  def __post_init__(self):
    _check_kind(self)

  @property
  def known_size(self) -> int:
    return self.num_examples

  def read_batch(self, indices: tf.Tensor) -> tf.Tensor:
    """The serialized records at `indices` (1-D), as a string tensor: one Python call for the batch."""
    def read(values: np.ndarray) -> np.ndarray:
      records = self.read_records(values)
      if len(records) != len(values):
        raise input_error(f"{self.description}: asked for {len(values)} records, got {len(records)}")
      return np.array(records, dtype=object)
    records = tf.numpy_function(read, [indices], tf.string, stateful=False)
    records.set_shape(indices.shape)
    return records


@dataclasses.dataclass(frozen=True, eq=False)
class RecordData:
  """A split streamed from TFRecord files of serialized `tf.train.Example`s.

  Attributes:
    files: the files, in sorted order.
    file_counts: records per file, or None: then they are counted (one pass over the bytes) the
      first time something needs them: evaluation (padding to static shapes) and a resumed
      training stream (to find its place in the epoch). A fresh training run never counts, so its
      start does not grow with the dataset.
    parse: `parse(serialized) -> (features, label)` for one record, in TensorFlow.
    parse_encoded: as for `IndexedRecords`: the record with its image still encoded, or None.
    example_shape, features_dtype, labels_dtype, label_shape: as for `IndexedData`.
    shuffle_buffer: the training stream permutes each window of this many records (on top of the
      per-epoch shuffled file order and the interleave across files); the window is held in memory
      as serialized records.
    file_ranges: per file, the (first record, record count) that belong to the split, or None for
      whole files. A TFDS split slice such as `train[:45000]` ends inside a shard; the records
      outside the range are read past, never parsed. Needs `file_counts` (the range's counts).
  """

  files: tuple[str, ...]
  file_counts: tuple[int, ...] | None
  parse: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
  example_shape: tuple
  features_dtype: np.dtype
  labels_dtype: np.dtype = np.dtype(np.int32)
  label_shape: tuple = ()
  shuffle_buffer: int = 10_000
  parse_encoded: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None = None
  file_ranges: tuple[tuple[int, int], ...] | None = None

  def __post_init__(self):
    if not self.files or (self.file_counts is not None and len(self.files) != len(self.file_counts)):
      raise ValueError("RecordData needs at least one file (and one record count per file if counted)")
    if self.file_ranges is not None and (self.file_counts is None
                                         or len(self.file_ranges) != len(self.files)):
      raise ValueError("RecordData.file_ranges needs one (first, count) range per file, and file_counts")
    _check_kind(self)

  @property
  def known_size(self) -> int | None:
    """N if the records have been counted, else None (nothing is read)."""
    return None if self.file_counts is None else sum(self.file_counts)

  @property
  def num_examples(self) -> int:
    """N, counting the records of every file if that has not happened yet."""
    return sum(self._counts(self.files))

  def worker_files(self, worker: int, num_workers: int) -> tuple[str, ...]:
    """The files worker `worker` of `num_workers` trains on: every num_workers-th.

    A worker reads only its own files; so there must be at least as many files as workers.
    """
    if len(self.files) < num_workers:
      raise ValueError(f"{len(self.files)} training file(s) cannot be shared by {num_workers} workers: each "
                       f"worker reads its own files; write the split as at least {num_workers} shards")
    return self.files[worker::num_workers]

  def ranges(self, files: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """(first records, counts) of `files` (some of this split's); (0, -1: to the end) for whole files."""
    ranges = dict(zip(self.files, self.file_ranges or [(0, -1)] * len(self.files)))
    return [ranges[path][0] for path in files], [ranges[path][1] for path in files]

  def records(self, files: tuple[str, ...]) -> tf.data.Dataset:
    """The serialized records of `files` (some of this split's), file after file, each within its range."""
    firsts, counts = self.ranges(files)
    return tf.data.Dataset.from_tensor_slices(
        (list(files), np.array(firsts, np.int64), np.array(counts, np.int64))).flat_map(file_records)

  def records_in(self, files: tuple[str, ...]) -> int:
    """Records in `files` (some of this split's), counting only those files if not yet counted."""
    return sum(self._counts(files))

  def _counts(self, files: tuple[str, ...]) -> tuple[int, ...]:
    if self.file_counts is not None:
      counts = dict(zip(self.files, self.file_counts))
      return tuple(counts[path] for path in files)
    counted = count_records(files)
    if files == self.files:
      object.__setattr__(self, "file_counts", counted)  # counted once; frozen otherwise
    return counted


def file_records(path: tf.Tensor, first: tf.Tensor, count: tf.Tensor) -> tf.data.Dataset:
  """The records `first` to `first + count` of one TFRecord file (`count` -1: to its end)."""
  return tf.data.TFRecordDataset(path).skip(first).take(count)


def count_records(files: tuple[str, ...]) -> tuple[int, ...]:
  """Records in each TFRecord file: one pass over the bytes (framing and checksums), nothing parsed,
  files read in parallel. TensorFlow reads a file that ends inside a record as if it ended before it;
  the bytes framed are compared with the file's size, so a truncated file is an error naming it."""
  def count(path: tf.Tensor) -> tf.data.Dataset:
    def add(state, record):
      return state[0] + 1, state[1] + _FRAMING_BYTES + tf.cast(tf.strings.length(record), tf.int64)
    framed = tf.data.TFRecordDataset(path).reduce((np.int64(0), np.int64(0)), add)
    return tf.data.Dataset.from_tensors(framed)
  framed = (tf.data.Dataset.from_tensor_slices(list(files))
            .interleave(count, cycle_length=tf.data.AUTOTUNE, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True))
  counts = []
  for path, (records, size) in zip(files, framed.as_numpy_iterator()):
    on_disk = tf.io.gfile.stat(path).length
    if size != on_disk:
      raise input_error(f"{path}: ends inside record {records} (byte {size} of {on_disk}): the file is "
                        "truncated")
    counts.append(int(records))
  return tuple(counts)


_FRAMING_BYTES = 16  # per TFRecord: the length (8 bytes) and its CRC (4), the data's CRC (4)


def _check_kind(split) -> None:
  """The dtypes a split may declare; raises a ValueError naming the offending one."""
  object.__setattr__(split, "features_dtype", np.dtype(split.features_dtype))
  object.__setattr__(split, "labels_dtype", np.dtype(split.labels_dtype))
  object.__setattr__(split, "example_shape", tuple(split.example_shape))
  object.__setattr__(split, "label_shape", tuple(split.label_shape))
  if split.features_dtype not in (np.uint8, np.float32):
    raise ValueError(f"features must be uint8 (images) or float32, got {split.features_dtype}")
  if split.labels_dtype not in (np.int32, np.float32):
    raise ValueError(f"labels must be int32 class ids or float32 targets, got {split.labels_dtype}")
  if split.known_size is not None and split.known_size < 1:
    raise ValueError("a split needs at least one example")
