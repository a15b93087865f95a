"""Loaders for data on disk: TFRecord files of `tf.train.Example`s, and prepared TFDS datasets.

Both read each split completely into memory and return the same `Splits` as the built-in datasets,
so the rest of the framework has one input path. The in-memory pipeline needs every split to fit in
RAM; that is the design for this framework's research-scale data (up to a few GB), where exact,
reproducible subsetting and label corruption matter more than streaming.
"""

from __future__ import annotations

import math
from typing import Sequence

import gin
import numpy as np
import tensorflow as tf

from trainer.data.arrays import ArrayData, Splits, describe

_READ_BATCH = 1024  # Records parsed per `tf.io.parse_example` call.


# --- TFRecord -------------------------------------------------------------------------------------


def _example(features: np.ndarray, label: np.ndarray, feature_key: str,
             label_key: str) -> tf.train.Example:
  """One `tf.train.Example`: flattened float features; an int64 class id or float targets."""
  if label.dtype == np.int32:
    label_feature = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
  else:
    label_feature = tf.train.Feature(float_list=tf.train.FloatList(value=label.ravel()))
  return tf.train.Example(features=tf.train.Features(feature={
      feature_key: tf.train.Feature(float_list=tf.train.FloatList(value=features.ravel())),
      label_key: label_feature,
  }))


def write_tfrecord(path: str, data: ArrayData, *, feature_key: str = "features",
                   label_key: str = "label") -> None:
  """Writes `data` to one TFRecord file in the format `tfrecord` reads.

  Features are stored flattened as a float_list (the reader restores `feature_shape`); int32 class
  labels as a one-element int64_list, float32 targets flattened as a float_list.
  """
  with tf.io.TFRecordWriter(path) as writer:
    for features, label in zip(data.features, data.labels):
      writer.write(_example(features, label, feature_key, label_key).SerializeToString())


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


def _checked_values(parsed: tf.RaggedTensor, path: str, key: str, first_record: int,
                    size: int | None) -> np.ndarray:
  """The values of one ragged feature as (records, size), checking every record's length.

  `size=None` takes the first record's length as the expected one. A record without the key
  parses to length 0, so that case is reported as missing.
  """
  lengths = parsed.row_lengths().numpy()
  expected = lengths[0] if size is None else size
  bad = np.flatnonzero(lengths != expected)
  if bad.size or expected == 0:
    index = bad[0] if bad.size else 0
    record = first_record + index
    if lengths[index] == 0:
      raise ValueError(f"{path}: record {record} has no {key!r} feature (missing key?)")
    raise ValueError(f"{path}: record {record} has {lengths[index]} values for {key!r}, "
                     f"expected {expected}")
  return parsed.flat_values.numpy().reshape(len(lengths), expected)


def _read_file(path: str, feature_key: str, label_key: str, feature_size: int,
               classification: bool, label_size: int | None) -> tuple[np.ndarray, np.ndarray]:
  """All records of one file as flat float32 features (n, feature_size) and labels (n, k).

  `label_size` is k if already known (1 for a class id, the target count of earlier regression
  records), else None: then the first record decides it and every later one must agree.
  """
  spec = {feature_key: tf.io.RaggedFeature(tf.float32),
          label_key: tf.io.RaggedFeature(tf.int64 if classification else tf.float32)}
  features, labels, count = [], [], 0
  try:
    for serialized in tf.data.TFRecordDataset(path).batch(_READ_BATCH):
      parsed = tf.io.parse_example(serialized, spec)
      features.append(_checked_values(parsed[feature_key], path, feature_key, count, feature_size))
      labels.append(_checked_values(parsed[label_key], path, label_key, count, label_size))
      label_size = labels[-1].shape[1]
      count += len(features[-1])
  except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
    raise ValueError(f"{path}: cannot parse records with float {feature_key!r} and "
                     f"{'int64' if classification else 'float'} {label_key!r} "
                     f"(num_classes decides the label type): {error.message}") from error
  if not count:
    raise ValueError(f"{path}: contains no records")
  return np.concatenate(features), np.concatenate(labels)


def _read_split(argument: str, patterns: str | Sequence[str], feature_key: str, label_key: str,
                feature_shape: tuple[int, ...], classification: bool) -> ArrayData:
  """Reads and concatenates every file of one split, in sorted file order."""
  features, labels = [], []
  label_size = 1 if classification else None
  for path in _match_files(argument, patterns):
    file_features, file_labels = _read_file(path, feature_key, label_key,
                                            math.prod(feature_shape), classification, label_size)
    features.append(file_features)
    labels.append(file_labels)
    label_size = file_labels.shape[1]
  all_features = np.concatenate(features).reshape(-1, *feature_shape)
  all_labels = np.concatenate(labels)
  if classification:
    return ArrayData(features=all_features, labels=all_labels[:, 0].astype(np.int32))
  return ArrayData(features=all_features, labels=all_labels)


@gin.configurable
def tfrecord(*, train_files: str | Sequence[str], validation_files: str | Sequence[str],
             test_files: str | Sequence[str], feature_key: str = "features",
             label_key: str = "label", feature_shape: Sequence[int], num_classes: int | None,
             name: str = "tfrecord") -> Splits:
  """Reads three splits of `tf.train.Example` TFRecord files into memory.

  Args:
    train_files, validation_files, test_files: a path or glob pattern, or a list of them (any
      filesystem `tf.io.gfile` supports). Files are read in sorted order.
    feature_key: name of the float_list feature holding each example's flattened features.
    label_key: name of the label feature: an int64 class id for classification, a float_list of
      targets for regression (read as float32 of shape (N, targets_per_example)).
    feature_shape: per-example shape to restore, e.g. (28, 28, 1); each record must have exactly
      prod(feature_shape) feature values.
    num_classes: number of classes (labels must lie in [0, num_classes)), or None for regression.
    name: dataset name for `Splits.name` and the log.

  Raises:
    FileNotFoundError: a pattern matches no file (names the argument and the pattern).
    ValueError: a record lacks a key, has the wrong number of values, or has the wrong label type
      (names the file, the record and the key).
  """
  feature_shape = tuple(int(size) for size in feature_shape)
  if not feature_shape or min(feature_shape) < 1:
    raise ValueError(f"feature_shape must be non-empty with positive sizes, got {feature_shape}")
  classification = num_classes is not None
  train, validation, test = (
      _read_split(argument, patterns, feature_key, label_key, feature_shape, classification)
      for argument, patterns in (("train_files", train_files),
                                 ("validation_files", validation_files),
                                 ("test_files", test_files)))
  return Splits(name=name, train=train, validation=validation, test=test, num_classes=num_classes,
                description=describe(name, train, validation, test, 0,
                                     f"TFRecord files {train_files!r}"))


# --- TFDS -----------------------------------------------------------------------------------------


def _import_tfds():
  """`tensorflow_datasets`, imported on first use because it is an optional dependency."""
  try:
    import tensorflow_datasets
  except ImportError as error:
    raise ImportError("the tfds loader needs TensorFlow Datasets: `pip install "
                      "tensorflow-datasets` (or install this package with the `test` extra)"
                      ) from error
  return tensorflow_datasets


def _as_float32(values: np.ndarray) -> np.ndarray:
  """Features as float32; uint8 (images) are scaled from 0..255 to [0, 1]."""
  if values.dtype == np.uint8:
    return values.astype(np.float32) / 255.0
  return values.astype(np.float32)


def _tfds_split(builder, split: str, feature_key: str, label_key: str,
                num_classes: int | None) -> ArrayData:
  """One whole split of a prepared TFDS builder as arrays."""
  data = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
  labels = data[label_key].numpy()
  labels = labels.astype(np.int32) if num_classes is not None else labels.astype(np.float32)
  return ArrayData(features=_as_float32(data[feature_key].numpy()), labels=labels)


def _prepared_builder(name: str, data_dir: str):
  """The TFDS builder of `name` if its data are prepared under `data_dir`; else FileNotFoundError.

  An unregistered name is looked up in `data_dir` only; a registered one must also be prepared
  there, since preparing would download.
  """
  tensorflow_datasets = _import_tfds()
  missing = FileNotFoundError(
      f"TFDS dataset {name!r} is not prepared under data_dir={data_dir!r}; prepare it where there "
      f"is network (e.g. `tfds build {name} --data_dir=...`) and copy the directory here")
  try:
    builder = tensorflow_datasets.builder(name, data_dir=data_dir)
  except tensorflow_datasets.core.DatasetNotFoundError as error:
    raise missing from error
  if not builder.is_prepared():
    raise missing
  return builder


def _label_classes(builder, feature_key: str, label_key: str) -> int | None:
  """Checks both keys exist; returns the class count of a `ClassLabel` label, else None."""
  features = builder.info.features
  for key in (feature_key, label_key):
    if key not in features:
      raise ValueError(f"TFDS dataset {builder.info.full_name} has no feature {key!r}; "
                     f"it has {sorted(features.keys())}")
  return getattr(features[label_key], "num_classes", None)


@gin.configurable
def tfds(*, name: str, data_dir: str, train_split: str = "train",
         validation_split: str = "validation", test_split: str = "test",
         feature_key: str = "image", label_key: str = "label",
         num_classes: int | None = None) -> Splits:
  """Reads a TFDS dataset that is already prepared under `data_dir` into memory. Never downloads.

  Training machines have no network, so preparation (`tfds build` or `download_and_prepare`) is a
  separate step done elsewhere; this only reads, like `tfds.load(..., download=False)`. The builder
  code need not be importable: TFDS can reconstruct a reader from the prepared files alone.

  Args:
    name: TFDS name, optionally with config and version, e.g. `mnist` or `mnist/3.0.1`.
    data_dir: directory the dataset was prepared into.
    train_split, validation_split, test_split: TFDS split specs, so slices such as
      `train[:90%]` / `train[90%:]` can carve a validation split out of a dataset that has none.
    feature_key, label_key: feature names in the dataset's `FeaturesDict`.
    num_classes: number of classes; None takes it from a `ClassLabel` label feature, and means
      regression (float32 labels) if the label is not a `ClassLabel`.

  Returns:
    Splits with float32 features (uint8 images scaled to [0, 1]).
  """
  builder = _prepared_builder(name, data_dir)
  inferred_classes = _label_classes(builder, feature_key, label_key)
  num_classes = inferred_classes if num_classes is None else num_classes
  train, validation, test = (_tfds_split(builder, split, feature_key, label_key, num_classes)
                             for split in (train_split, validation_split, test_split))
  return Splits(name=name, train=train, validation=validation, test=test, num_classes=num_classes,
                description=describe(name, train, validation, test, 0,
                                     f"TFDS {builder.info.full_name} in {data_dir}"))
