"""Loaders for data on disk: TFRecord shards of `tf.train.Example`s, and prepared TFDS datasets.

`tfrecord` streams its files (a `RecordData` split: per-worker shards, shuffled per epoch, never
held in memory); features are float lists, raw uint8 bytes or encoded PNG/JPEG images. `tfds`
reads a prepared TFDS dataset by index through its random-access data source (datasets prepared
in the `array_record` format), or, for datasets prepared as TFRecord (TFDS's default), streams the
split's shards as a `RecordData` built from TFDS's own file instructions and example decoder.
Neither ever downloads: training machines read a prepared `data_dir` (local, or any filesystem
`tf.io.gfile` reads, such as gs://).
"""

from __future__ import annotations

import contextlib
import logging as python_logging
import math
import os
from typing import Iterator, Sequence

import gin
import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

from trainer.data import diagnosis
from trainer.data.arrays import ArrayData
from trainer.data.sources import IndexedRecords, RecordData, count_records
from trainer.data.splits import Splits, describe

IMAGE_FORMATS = ("raw", "png", "jpeg")


# --- TFRecord -------------------------------------------------------------------------------------


def _feature_bytes(features: np.ndarray, image_format: str) -> bytes:
  if image_format == "raw":
    return features.tobytes()
  image = features if features.ndim == 3 else features[..., None]
  encode = tf.io.encode_png if image_format == "png" else tf.io.encode_jpeg
  return encode(image).numpy()


def _example(features: np.ndarray, label: np.ndarray, feature_key: str, label_key: str,
             image_format: str) -> tf.train.Example:
  """One `tf.train.Example`: float features as a float_list, uint8 images as bytes; the label."""
  if features.dtype == np.uint8:
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[_feature_bytes(features, image_format)]))
  else:
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=features.ravel()))
  if label.dtype == np.int32:
    label_feature = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
  else:
    label_feature = tf.train.Feature(float_list=tf.train.FloatList(value=label.ravel()))
  return tf.train.Example(features=tf.train.Features(
      feature={feature_key: feature, label_key: label_feature}))


def write_tfrecord(path: str, data: ArrayData, *, feature_key: str = "features", label_key: str = "label",
                   image_format: str = "raw", num_shards: int = 1) -> list[str]:
  """Writes `data` as TFRecord files in the format `tfrecord` reads; returns the file names.

  Float32 features are stored flattened as a float_list (the reader restores `feature_shape`);
  uint8 images as one bytes value: raw pixels (`image_format='raw'`) or an encoded 'png'/'jpeg'
  (lossy). Int32 class labels become a one-element int64_list, float32 targets a float_list. With
  `num_shards` > 1 the examples are dealt round-robin to `path-00000-of-0000N` files (the way a
  sequential split is shared between workers).
  """
  if image_format not in IMAGE_FORMATS:
    raise ValueError(f"image_format={image_format!r} is not one of {IMAGE_FORMATS}")
  if image_format != "raw" and data.features_dtype != np.uint8:
    raise ValueError(f"image_format={image_format!r} encodes uint8 images; these features are "
                     f"{data.features_dtype}")
  paths = ([path] if num_shards == 1 else
           [f"{path}-{shard:05d}-of-{num_shards:05d}" for shard in range(num_shards)])
  for shard, shard_path in enumerate(paths):
    with tf.io.TFRecordWriter(shard_path) as writer:
      for index in range(shard, data.num_examples, num_shards):
        writer.write(_example(data.features[index], data.labels[index], feature_key, label_key,
                              image_format).SerializeToString())
  return paths


def _match_files(argument: str, patterns: str | Sequence[str]) -> list[str]:
  """Expands glob patterns to a sorted list of files; a pattern matching nothing is an error."""
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  if not patterns:
    raise ValueError(f"{argument} is empty")
  files = []
  for pattern in patterns:
    matches = sorted(tf.io.gfile.glob(pattern))
    if not matches:
      raise FileNotFoundError(f"{argument}: no files match {pattern!r}")
    files.extend(match for match in matches if match not in files)
  return files


def _first_record(path: str) -> tf.train.Example:
  try:
    for serialized in tf.data.TFRecordDataset(path).take(1):
      return tf.train.Example.FromString(serialized.numpy())
  except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
    raise ValueError(f"{path}: not a TFRecord file of tf.train.Example records ({error.message})") from error
  raise ValueError(f"{path}: contains no records")


class _RecordFormat:
  """How the records of one split store features and labels, learnt from each file's first record.

  Every file's first record is checked against the declared `feature_shape` and label kind, so a
  wrong key, shape or dtype fails when the split is opened, naming the file. Later records are
  checked as they are parsed: a class id outside [0, num_classes) or an image of another size fails
  the parse (in the graph) instead of training on it; `trainer.data.diagnosis` then names the file
  and record.
  """

  def __init__(self, feature_key: str, label_key: str, feature_shape: tuple, num_classes: int | None):
    self.feature_key, self.label_key = feature_key, label_key
    self.feature_shape, self.classification = feature_shape, num_classes is not None
    self.num_classes = num_classes
    self.encoding: str | None = None  # 'float', 'raw' or 'encoded'
    self.label_size: int | None = 1 if self.classification else None

  def check(self, path: str, example: tf.train.Example) -> None:
    features = example.features.feature
    for key in (self.feature_key, self.label_key):
      if key not in features:
        raise ValueError(f"{path}: record 0 has no {key!r} feature (missing key?); it has {sorted(features)}")
    self._check_features(path, features[self.feature_key])
    self._check_label(path, features[self.label_key])

  def _check_features(self, path: str, feature: tf.train.Feature) -> None:
    kind = feature.WhichOneof("kind")
    size = math.prod(d for d in self.feature_shape if d is not None)
    if kind == "float_list":
      encoding, found = "float", len(feature.float_list.value)
    elif kind == "bytes_list" and len(feature.bytes_list.value) == 1:
      value = feature.bytes_list.value[0]
      encoding = "raw" if None not in self.feature_shape and len(value) == size else "encoded"
      found = len(value) if encoding == "raw" else size
      if encoding == "encoded":
        self._check_image(path, value)
    else:
      raise ValueError(f"{path}: record 0 stores {self.feature_key!r} as {kind}; expected a float_list or "
                       "one bytes value (raw uint8 pixels or an encoded image)")
    if encoding == "float" and None in self.feature_shape:
      raise ValueError(f"{path}: float features need a fixed feature_shape, got {list(self.feature_shape)}")
    if encoding == "float" and found != size:
      raise ValueError(f"{path}: record 0 has {found} values for {self.feature_key!r}, expected {size}")
    if self.encoding not in (None, encoding):
      raise ValueError(f"{path}: record 0 stores {self.feature_key!r} as {encoding}, other files as "
                       f"{self.encoding}")
    self.encoding = encoding

  def _check_image(self, path: str, value: bytes) -> None:
    try:
      image = tf.io.decode_image(value, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
      raise ValueError(f"{path}: record 0: {self.feature_key!r} is neither {math.prod(self.feature_shape)} "
                       f"raw bytes nor a PNG/JPEG image ({error.message})") from error
    expected = self.feature_shape
    if len(expected) != 3 or any(e is not None and e != got for e, got in zip(expected, image.shape)):
      raise ValueError(f"{path}: record 0 has a {list(image.shape)} image for {self.feature_key!r}, "
                       f"expected feature_shape {list(expected)} (None for a size that varies)")

  def _check_label(self, path: str, feature: tf.train.Feature) -> None:
    kind = feature.WhichOneof("kind")
    wanted = "int64_list" if self.classification else "float_list"
    if kind != wanted:
      reason = "num_classes is set: a class id" if self.classification else "num_classes=None: float targets"
      raise ValueError(f"{path}: record 0 stores {self.label_key!r} as {kind}, expected {wanted} ({reason})")
    size = len(getattr(feature, kind).value)
    if self.label_size is not None and size != self.label_size:
      raise ValueError(f"{path}: record 0 has {size} values for {self.label_key!r}, "
                       f"expected {self.label_size}")
    self.label_size = size

  def parse(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One record as (features, label) tensors: uint8 images or float32 features; int32 or float32 labels."""
    features, label = self.parse_encoded(serialized)
    if self.encoding == "float":
      features = tf.reshape(features, self.feature_shape)
    elif self.encoding == "raw":
      features = tf.reshape(tf.io.decode_raw(features, tf.uint8), self.feature_shape)
    else:
      features = tf.ensure_shape(
          tf.io.decode_image(features, channels=self.feature_shape[-1], expand_animations=False),
          self.feature_shape)
    return features, label

  @property
  def decodes_later(self) -> bool:
    """Whether preprocessing may decode the images itself (`parse_encoded`): encoded images of varying
    size, so that no declared size is left to check against the decoded one."""
    return self.encoding == "encoded" and None in self.feature_shape

  def parse_encoded(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One record as (stored features, label): the feature as stored (bytes or a flat float list)."""
    if self.encoding == "float":
      feature_spec = tf.io.FixedLenFeature([math.prod(self.feature_shape)], tf.float32)
    else:
      feature_spec = tf.io.FixedLenFeature([], tf.string)
    label_spec = (tf.io.FixedLenFeature([], tf.int64) if self.classification
                  else tf.io.FixedLenFeature([self.label_size], tf.float32))
    parsed = tf.io.parse_single_example(serialized,
                                        {self.feature_key: feature_spec, self.label_key: label_spec})
    features = parsed[self.feature_key]
    label = parsed[self.label_key]
    if not self.classification:
      return features, label
    return _checked_class_id(features, label, self.label_key, self.num_classes)


def _checked_class_id(features: tf.Tensor, label: tf.Tensor, label_key: str, num_classes: int,
                      where: str = "") -> tuple[tf.Tensor, tf.Tensor]:
  """(features, label as int32), failing in the graph if the label is not a class id in [0, num_classes);
  the message starts with `where` (the dataset and split) when given."""
  prefix = f"{where}: " if where else ""
  message = f"{prefix}{label_key!r} is a class id outside [0, num_classes={num_classes})"
  label = tf.cast(label, tf.int64)
  with tf.control_dependencies([tf.debugging.assert_non_negative(label, message=message),
                                tf.debugging.assert_less(label, tf.constant(num_classes, tf.int64),
                                                         message=message)]):
    return tf.identity(features), tf.cast(label, tf.int32)


def _open_split(argument: str, patterns: str | Sequence[str], record_format: _RecordFormat,
                shuffle_buffer: int, count: bool) -> RecordData:
  """Checks first records and counts the records now only if `count` (evaluation splits, which are read
  whole anyway); a training split has its first file's first record checked, and nothing else is read
  before training (its other files are checked as they are parsed): start-up does not grow with it."""
  files = tuple(_match_files(argument, patterns))
  for path in files if count else files[:1]:
    record_format.check(path, _first_record(path))
  try:
    counts = count_records(files) if count else None
  except (tf.errors.OpError, ValueError) as error:  # a damaged record or a truncated file: name the file
    raise ValueError(f"{argument}: {diagnosis.bad_record(files) or diagnosis.reason(error)}") from error
  return RecordData(files=files, file_counts=counts,
                    parse=record_format.parse,
                    parse_encoded=record_format.parse_encoded if record_format.decodes_later else None,
                    example_shape=record_format.feature_shape,
                    features_dtype=np.float32 if record_format.encoding == "float" else np.uint8,
                    labels_dtype=np.int32 if record_format.classification else np.float32,
                    label_shape=() if record_format.classification else (record_format.label_size,),
                    shuffle_buffer=shuffle_buffer)


@gin.configurable
def tfrecord(*, train_files: str | Sequence[str], validation_files: str | Sequence[str],
             test_files: str | Sequence[str], feature_key: str = "features",
             label_key: str = "label", feature_shape: Sequence[int | None], num_classes: int | None,
             shuffle_buffer: int = 10_000, name: str = "tfrecord") -> Splits:
  """Streams three splits of `tf.train.Example` TFRecord files (see `trainer.data.pipeline`).

  Args:
    train_files, validation_files, test_files: a path or glob pattern, or a list of them (any
      filesystem `tf.io.gfile` supports). Files are taken in sorted order; in training, each
      worker reads every num_workers-th train file, so write at least as many shards as workers.
    feature_key: the feature holding each example: a float_list of prod(feature_shape) values, one
      bytes value of raw uint8 pixels, or one encoded PNG/JPEG image.
    label_key: an int64 class id for classification, a float_list of targets for regression.
    feature_shape: per-example shape, e.g. (32, 32, 3); for encoded images of varying size, None
      for the varying sides, e.g. (None, None, 3) (then bind `ImagePreprocessing.image_size`).
    num_classes: number of classes (labels must lie in [0, num_classes)), or None for regression.
    shuffle_buffer: the training stream permutes each window of this many records (held in memory,
      serialized) on top of the per-epoch file order and the interleave across files.
    name: dataset name for `Splits.name` and the log.

  Raises:
    FileNotFoundError: a pattern matches no file (names the argument and the pattern).
    ValueError: the first record of a file lacks a key, has the wrong number of values or the wrong
      feature or label type (names the file and the key).
  """
  feature_shape = tuple(None if size is None else int(size) for size in feature_shape)
  if not feature_shape or min(size for size in feature_shape if size is not None) < 1:
    raise ValueError(f"feature_shape must be non-empty with positive sizes, got {feature_shape}")
  if shuffle_buffer < 1:
    raise ValueError(f"tfrecord.shuffle_buffer must be >= 1, got {shuffle_buffer}")
  record_format = _RecordFormat(feature_key, label_key, feature_shape, num_classes)
  train, validation, test = (
      _open_split(argument, patterns, record_format, shuffle_buffer, count=argument != "train_files")
      for argument, patterns in (("train_files", train_files), ("validation_files", validation_files),
                                 ("test_files", test_files)))
  return Splits(name=name, train=train, validation=validation, test=test, num_classes=num_classes,
                description=describe(name, train, validation, test, 0,
                                     f"TFRecord files {train_files!r}, streamed"))


# --- .npy arrays ----------------------------------------------------------------------------------


def _memory_mapped(argument: str, path: str) -> np.ndarray:
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{argument}: no file {path!r}")
  try:
    return np.load(path, mmap_mode="r")
  except ValueError as error:
    raise ValueError(f"{argument}: {path!r} is not a .npy array ({error})") from error


@gin.configurable
def npy(*, train: Sequence[str], validation: Sequence[str], test: Sequence[str], num_classes: int | None,
        name: str = "npy") -> Splits:
  """Three splits of `.npy` arrays, memory-mapped: the features stay on disk, each batch reads its rows.

  Each split is a pair of paths (features, labels): features uint8 images (N, H, W, C) or float32;
  labels int32 class ids (N,) or float32 targets (read into memory, they are small). Random access
  keeps the exact, replica-invariant order of in-memory data at any N (local files; `np.load`
  cannot map a remote filesystem).
  """
  splits = []
  for argument, paths in (("npy.train", train), ("npy.validation", validation), ("npy.test", test)):
    if len(paths) != 2:
      raise ValueError(f"{argument} must be (features_path, labels_path), got {paths!r}")
    features = _memory_mapped(argument, paths[0])
    labels = np.asarray(_memory_mapped(argument, paths[1]))
    try:
      splits.append(ArrayData(features=features, labels=labels))
    except ValueError as error:
      raise ValueError(f"{argument} {tuple(paths)!r}: {error}") from error
  train_split, validation_split, test_split = splits
  return Splits(name=name, train=train_split, validation=validation_split, test=test_split,
                num_classes=num_classes,
                description=describe(name, train_split, validation_split, test_split, 0,
                                     f"memory-mapped .npy {train[0]!r}"))


# --- TFDS -----------------------------------------------------------------------------------------


def import_tfds():
  """`tensorflow_datasets`, imported on first use because it is an optional dependency."""
  try:
    import tensorflow_datasets
  except ImportError as error:
    raise ImportError("the tfds loader needs TensorFlow Datasets: `pip install "
                      "tensorflow-datasets` (or install this package with the `test` extra)"
                      ) from error
  return tensorflow_datasets


class NotPreparedError(FileNotFoundError):
  """A TFDS dataset is not prepared under its data_dir; the message says how to prepare it."""


def _not_prepared(name: str, data_dir: str) -> NotPreparedError:
  return NotPreparedError(
      f"TFDS dataset {name!r} is not prepared under data_dir={data_dir!r}; prepare it where there is "
      f"network (`tfds build {name} --data_dir=...`, or with `--file_format=array_record` for random "
      "access) and copy the directory here")


class _HeldRecords(python_logging.Filter):
  """Holds the log records of TensorFlow Datasets' own files instead of letting them through."""

  def __init__(self):
    super().__init__()
    self.records: list[python_logging.LogRecord] = []

  def filter(self, record: python_logging.LogRecord) -> bool:
    if "tensorflow_datasets" in record.pathname.split(os.sep):
      self.records.append(record)
      return False
    return True


@contextlib.contextmanager
def _unless_not_prepared() -> Iterator[None]:
  """TFDS's warnings while a dataset is looked up, shown only if it is prepared: for one that is not,
  TFDS warns about each empty folder it probed before `NotPreparedError` says what to do."""
  logger = absl_logging.get_absl_logger()
  held = _HeldRecords()
  logger.addFilter(held)
  try:
    yield
  except NotPreparedError:
    held.records.clear()
    raise
  finally:
    logger.removeFilter(held)
    for record in held.records:
      logger.handle(record)


def _builder(tensorflow_datasets, name: str, data_dir: str):
  """The TFDS builder of `name` (from its registered code, or reconstructed from files in data_dir)."""
  try:
    return tensorflow_datasets.builder(name, data_dir=data_dir)
  except tensorflow_datasets.core.DatasetNotFoundError as error:
    raise _not_prepared(name, data_dir) from error
  except KeyError as error:  # TFDS's path library (etils.epath) has no such scheme, e.g. ram://
    raise ValueError(f"tfds.data_dir={data_dir!r}: TFDS cannot open paths of this filesystem (its path "
                     f"library knows local paths, gs://, s3://, az:// and hf://; not {error})") from error


def _label_classes(features, full_name: str, feature_key: str, label_key: str) -> int | None:
  """Checks both keys exist; returns the class count of a `ClassLabel` label, else None."""
  for key in (feature_key, label_key):
    if key not in features:
      raise ValueError(f"TFDS dataset {full_name} has no feature {key!r}; it has {sorted(features.keys())}")
  return getattr(features[label_key], "num_classes", None)


def _indexed_split(tensorflow_datasets, name: str, data_dir: str, split: str, feature_key: str,
                   label_key: str, num_classes: int | None, info) -> IndexedRecords:
  """One split read by index through TFDS's random-access data source (array_record files).

  Python only fetches the serialized records, a batch per call (ArrayRecord's batch read); TFDS's own
  graph-mode deserializer parses them, and images stay encoded until preprocessing decodes them (only
  the crop window of a JPEG, for a random-resized crop). Each class id is checked against num_classes
  in the graph (the examples are only known when read)."""
  source = tensorflow_datasets.data_source(
      name, split=split, data_dir=data_dir, download=False,
      deserialize_method=tensorflow_datasets.decode.DeserializeMethod.RAW_BYTES)
  feature = info.features[feature_key]
  label = info.features[label_key]
  encoded_image = isinstance(feature, tensorflow_datasets.features.Image)
  where = f"TFDS {name} split {split!r} in {data_dir}"

  def parse(serialized: tf.Tensor, decode_image: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    decoders = None if decode_image or not encoded_image else {
        feature_key: tensorflow_datasets.decode.SkipDecoding()}
    example = info.features.deserialize_example(serialized, decoders=decoders)
    features, value = example[feature_key], example[label_key]
    if num_classes is None:
      return features, tf.cast(value, tf.float32)
    return _checked_class_id(features, value, label_key, num_classes, where)

  return IndexedRecords(read_records=lambda indices: source.__getitems__([int(i) for i in indices]),
                        parse=parse, num_examples=len(source), example_shape=feature.shape,
                        features_dtype=np.dtype(feature.np_dtype),
                        labels_dtype=np.int32 if num_classes is not None else np.float32,
                        label_shape=() if num_classes is not None else tuple(label.shape),
                        parse_encoded=(lambda serialized: parse(serialized, decode_image=False))
                        if encoded_image else None,
                        description=where)


def _streamed_split(tensorflow_datasets, info, split: str, feature_key: str, label_key: str,
                    num_classes: int | None, shuffle_buffer: int) -> RecordData:
  """One split of a TFRecord-prepared dataset, streamed: TFDS's file instructions for the split (its
  shards, and where a slice such as `train[:45000]` starts and ends inside them) and TFDS's decoder for
  the two features read. The record counts come from the dataset's metadata: nothing is opened here.
  Images stay encoded until preprocessing decodes them where it can decode only a crop window (as for
  `_indexed_split`)."""
  instructions = [instruction for instruction in info.splits[split].file_instructions if instruction.take]
  if not instructions:
    raise ValueError(f"TFDS {info.full_name} split {split!r} has no examples")
  wanted = tensorflow_datasets.decode.PartialDecoding({feature_key: True, label_key: True})
  decoder = wanted.extract_features(info.features)  # parses and decodes the two features only
  feature = info.features[feature_key]
  features_dtype = np.uint8 if np.dtype(feature.np_dtype) == np.uint8 else np.float32
  encoded_image = isinstance(feature, tensorflow_datasets.features.Image)
  where = f"TFDS {info.full_name} split {split!r}"

  def parse(serialized: tf.Tensor, decode_image: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    decoders = None if decode_image or not encoded_image else {
        feature_key: tensorflow_datasets.decode.SkipDecoding()}
    example = decoder.deserialize_example(serialized, decoders=decoders)
    features = example[feature_key]
    if decode_image or not encoded_image:
      features = tf.cast(features, features_dtype)
    if num_classes is None:
      return features, tf.cast(example[label_key], tf.float32)
    return _checked_class_id(features, example[label_key], label_key, num_classes, where)

  return RecordData(files=tuple(instruction.filename for instruction in instructions),
                    file_counts=tuple(instruction.take for instruction in instructions),
                    file_ranges=tuple((instruction.skip, instruction.take) for instruction in instructions),
                    parse=parse, example_shape=feature.shape, features_dtype=features_dtype,
                    labels_dtype=np.int32 if num_classes is not None else np.float32,
                    label_shape=() if num_classes is not None else tuple(info.features[label_key].shape),
                    shuffle_buffer=shuffle_buffer,
                    parse_encoded=(lambda serialized: parse(serialized, decode_image=False))
                    if encoded_image else None)


@gin.configurable
def tfds(*, name: str, data_dir: str | None = None, train_split: str = "train",
         validation_split: str = "validation", test_split: str = "test",
         feature_key: str = "image", label_key: str = "label",
         num_classes: int | None = None, shuffle_buffer: int = 10_000) -> Splits:
  """A TFDS dataset prepared under `data_dir`, by name. Never downloads.

  Training machines have no network, so preparation (`tfds build`) is a separate step done
  elsewhere; this only reads. A dataset prepared in the `array_record` format
  (`--file_format=array_record`) is read by index through TFDS's data source: the data order,
  augmentation and resume are exact and replica-invariant. One prepared as TFRecord (TFDS's
  default) is streamed from its shards like a `tfrecord` split: exact resume, each worker reads its
  own shards. Either way memory stays flat in the dataset's size, and start-up reads no example
  beyond the first batch. `data_dir` may be on any filesystem `tf.io.gfile` reads (gs://...).

  Args:
    name: TFDS name, optionally with config and version, e.g. `cifar10` or `mnist/3.0.1`.
    data_dir: directory the dataset was prepared into (required; None is refused with how to prepare
      and bind it).
    train_split, validation_split, test_split: TFDS split specs, so slices such as
      `train[:45000]` / `train[45000:]` carve a validation split out of a dataset that has none.
    feature_key, label_key: feature names in the dataset's `FeaturesDict`.
    num_classes: number of classes; None takes it from a `ClassLabel` label feature, and means
      regression (float32 labels) if the label is not a `ClassLabel`.
    shuffle_buffer: for a dataset prepared as TFRecord, the window of records the training stream
      permutes (as `tfrecord.shuffle_buffer`); unused for array_record.
  """
  if data_dir is None:
    raise ValueError(
        f"tfds(name={name!r}) reads a dataset prepared in advance, and no tfds.data_dir is bound: prepare "
        f"it where there is network (`tfds build {name} --data_dir=DIR`), copy DIR here (or to a bucket) "
        "and add --gin_bindings=\"tfds.data_dir='DIR'\"; to check the config without the data, add "
        "--mock_data")
  if shuffle_buffer < 1:
    raise ValueError(f"tfds.shuffle_buffer must be >= 1, got {shuffle_buffer}")
  tensorflow_datasets = import_tfds()
  with _unless_not_prepared():
    return _tfds_splits(tensorflow_datasets, name, data_dir, (train_split, validation_split, test_split),
                        feature_key, label_key, num_classes, shuffle_buffer)


def _tfds_splits(tensorflow_datasets, name: str, data_dir: str, split_names: tuple[str, str, str],
                 feature_key: str, label_key: str, num_classes: int | None, shuffle_buffer: int) -> Splits:
  """`tfds`'s splits: read by index if prepared as array_record, else streamed from the TFRecord shards."""
  builder = _builder(tensorflow_datasets, name, data_dir)
  info = builder.info
  inferred_classes = _label_classes(info.features, info.full_name, feature_key, label_key)
  num_classes = inferred_classes if num_classes is None else num_classes
  try:
    splits = [_indexed_split(tensorflow_datasets, name, data_dir, split, feature_key, label_key,
                             num_classes, info) for split in split_names]
    source = f"TFDS {info.full_name} in {data_dir}, read by index"
  except (AssertionError, FileNotFoundError, tensorflow_datasets.core.DatasetNotFoundError) as error:
    raise _not_prepared(name, data_dir) from error
  except NotImplementedError:  # prepared as TFRecord: no random access
    if not builder.is_prepared():
      raise _not_prepared(name, data_dir) from None
    splits = [_streamed_split(tensorflow_datasets, info, split, feature_key, label_key, num_classes,
                              shuffle_buffer) for split in split_names]
    source = f"TFDS {info.full_name} in {data_dir}, streamed from its TFRecord shards"
  train, validation, test = splits
  return Splits(name=name, train=train, validation=validation, test=test, num_classes=num_classes,
                description=describe(name, train, validation, test, 0, source))
