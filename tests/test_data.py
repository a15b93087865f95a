"""Tests of the data layer: the built-in datasets, the label-noise rule, and the on-disk loaders."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tests.helpers import prepare_tiny_tfds
from trainer import data
from trainer.data import ArrayData, RecordData, Splits, pipeline
from trainer.data.sources import IndexedRecords

# --- containers -----------------------------------------------------------------------------------


def _arrays(n: int = 4, num_classes: int = 3) -> ArrayData:
  return ArrayData(np.zeros((n, 2), np.float32), np.arange(n, dtype=np.int32) % num_classes)


@pytest.mark.parametrize("features, labels, message", [
    (np.zeros((3, 2), np.float32), np.zeros(2, np.int32), "3 examples but labels have 2"),
    (np.zeros((0, 2), np.float32), np.zeros(0, np.int32), "at least one example"),
    (np.full((1, 2), np.nan, np.float32), np.zeros(1, np.int32), "NaN"),
    (np.zeros((1, 2), np.float64), np.zeros(1, np.int32), "float32"),
    (np.zeros((1, 2), np.float32), np.zeros(1, np.int64), "int32 class ids or float32"),
])
def test_array_data_rejects_bad_arrays(features, labels, message):
  with pytest.raises(ValueError, match=message):
    ArrayData(features, labels)


def test_splits_rejects_labels_outside_the_classes():
  with pytest.raises(ValueError, match=r"test labels span \[0, 2\], outside \[0, 2\)"):
    Splits("x", _arrays(num_classes=2), _arrays(num_classes=2), _arrays(num_classes=3), 2, "x")


def test_corrupt_labels_changes_exactly_the_fraction_to_other_classes():
  clean = np.arange(1000, dtype=np.int32) % 10
  noisy = data.corrupt_labels(clean, 0.3, 10, np.random.default_rng(0))
  assert np.sum(noisy != clean) == 300
  assert noisy.min() >= 0 and noisy.max() <= 9
  # "Uniform over the other classes": every wrong label value appears, with no obvious skew.
  counts = np.bincount((noisy - clean)[noisy != clean] % 10, minlength=10)
  assert counts[0] == 0 and counts[1:].min() > 15


# --- digits ---------------------------------------------------------------------------------------


def _row_hashes(split: ArrayData) -> set[str]:
  return {hashlib.sha1(row.tobytes()).hexdigest() for row in split.features}


@pytest.fixture(scope="module")
def clean_digits() -> Splits:
  return data.digits()


def test_digits_shapes_dtypes_and_ranges(clean_digits):
  sizes = {name: split.num_examples for name, split in clean_digits.named_splits()}
  assert sizes == {"train": 1257, "validation": 180, "test": 360}
  assert clean_digits.num_classes == 10
  for _, split in clean_digits.named_splits():
    assert split.features.shape[1:] == (8, 8, 1) and split.features.dtype == np.float32
    assert split.features.min() == 0.0 and split.features.max() == 1.0
    assert split.labels.dtype == np.int32 and set(split.labels) == set(range(10))
  assert "1257" in clean_digits.description and "\n" not in clean_digits.description


def test_digits_splits_are_disjoint_and_cover_the_dataset(clean_digits):
  hashes = [_row_hashes(split) for _, split in clean_digits.named_splits()]
  assert sum(len(h) for h in hashes) == 1797  # The 1,797 images are all distinct.
  assert len(set.union(*hashes)) == 1797


def test_digits_equal_scikit_learns_copy(clean_digits):
  sklearn_datasets = pytest.importorskip("sklearn.datasets")
  reference = sklearn_datasets.load_digits()
  label_of = {image.astype(np.uint8).tobytes(): label
              for image, label in zip(reference.images, reference.target)}
  for _, split in clean_digits.named_splits():
    pixels = np.rint(split.features[..., 0] * 16).astype(np.uint8)
    np.testing.assert_array_equal(pixels / np.float32(16), split.features[..., 0])
    assert [label_of[image.tobytes()] for image in pixels] == split.labels.tolist()


def test_digits_is_deterministic_and_seeded(clean_digits):
  again = data.digits()
  for (_, first), (_, second) in zip(clean_digits.named_splits(), again.named_splits()):
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.labels, second.labels)
  assert _row_hashes(data.digits(split_seed=1).test) != _row_hashes(clean_digits.test)


def test_digits_splits_are_stratified(clean_digits):
  assert np.bincount(clean_digits.test.labels).min() >= 35  # 36 per class, to within one.
  assert np.bincount(clean_digits.validation.labels).min() >= 17


def test_digits_num_train_is_a_prefix_of_the_training_split(clean_digits):
  small = data.digits(num_train=100)
  np.testing.assert_array_equal(small.train.features, clean_digits.train.features[:100])
  np.testing.assert_array_equal(small.test.labels, clean_digits.test.labels)
  assert np.bincount(small.train.labels).min() >= 9


@pytest.mark.parametrize("num_train, label_noise", [(None, 0.25), (100, 0.1), (50, 1.0)])
def test_digits_label_noise_is_exact_and_train_only(clean_digits, num_train, label_noise):
  noisy = data.digits(num_train=num_train, label_noise=label_noise)
  clean_labels = clean_digits.train.labels[:num_train]
  np.testing.assert_array_equal(noisy.train.features, clean_digits.train.features[:num_train])
  assert np.sum(noisy.train.labels != clean_labels) == round(label_noise * len(clean_labels))
  assert noisy.train.labels.min() >= 0 and noisy.train.labels.max() <= 9
  np.testing.assert_array_equal(noisy.validation.labels, clean_digits.validation.labels)
  np.testing.assert_array_equal(noisy.test.labels, clean_digits.test.labels)
  assert f"{label_noise:.1%} of train labels" in noisy.description


@pytest.mark.parametrize("kwargs, argument", [
    (dict(label_noise=1.5), "label_noise"),
    (dict(label_noise=-0.1), "label_noise"),
    (dict(num_train=1258), "num_train"),
    (dict(num_train=0), "num_train"),
    (dict(validation_size=0), "validation_size"),
    (dict(test_size=0), "test_size"),
    (dict(validation_size=900, test_size=900), "validation_size \\+ test_size"),
])
def test_digits_rejects_bad_arguments(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    data.digits(**kwargs)


# --- teacher_student ------------------------------------------------------------------------------


def test_teacher_student_shapes_and_determinism():
  splits = data.teacher_student(input_dim=5, num_train=40, num_validation=10, num_test=20)
  assert [split.features.shape for _, split in splits.named_splits()] == [(40, 5), (10, 5), (20, 5)]
  assert splits.train.labels.dtype == np.int32 and splits.num_classes == 10
  again = data.teacher_student(input_dim=5, num_train=40, num_validation=10, num_test=20)
  np.testing.assert_array_equal(splits.test.features, again.test.features)
  np.testing.assert_array_equal(splits.train.labels, again.train.labels)
  other = data.teacher_student(input_dim=5, num_train=40, num_validation=10, num_test=20, seed=1)
  assert not np.array_equal(splits.train.features, other.train.features)


def test_teacher_student_labels_come_from_the_teacher():
  splits = data.teacher_student(num_classes=4, seed=3)
  teacher = data.teacher_network(input_dim=16, hidden=32, num_outputs=4, seed=3)
  for _, split in splits.named_splits():
    np.testing.assert_array_equal(teacher(split.features).argmax(axis=1), split.labels)


def test_teacher_student_label_noise_is_exact_and_train_only():
  clean = data.teacher_student()
  noisy = data.teacher_student(label_noise=0.2)
  np.testing.assert_array_equal(noisy.train.features, clean.train.features)
  assert np.sum(noisy.train.labels != clean.train.labels) == round(0.2 * 1024)
  np.testing.assert_array_equal(noisy.test.labels, clean.test.labels)


def test_teacher_student_regression_targets_are_the_teacher_output():
  splits = data.teacher_student(num_classes=None, num_train=30)
  teacher = data.teacher_network(input_dim=16, hidden=32, num_outputs=1, seed=0)
  assert splits.num_classes is None and splits.train.labels.shape == (30, 1)
  np.testing.assert_allclose(splits.train.labels, teacher(splits.train.features), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="label_noise"):
    data.teacher_student(num_classes=None, label_noise=0.1)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_train=0), "num_train"), (dict(input_dim=0), "input_dim"),
    (dict(num_classes=1), "num_classes"), (dict(label_noise=2.0), "label_noise"),
])
def test_teacher_student_rejects_bad_arguments(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    data.teacher_student(**kwargs)


# --- tfrecord -------------------------------------------------------------------------------------


def _classification(stop: int, start: int = 0) -> ArrayData:
  """Examples start..stop-1 of a toy set: features (2, 3) unique to each example, label i % 3."""
  features = np.arange(start * 6, stop * 6, dtype=np.float32).reshape(-1, 2, 3) / 7
  return ArrayData(features, np.arange(start, stop, dtype=np.int32) % 3)


def _assert_equal(actual, expected: ArrayData) -> None:
  """A split read back in order (through the evaluation pipeline) equals the written arrays."""
  features, labels = pipeline.first_examples(actual, actual.num_examples)
  np.testing.assert_array_equal(features, expected.features)
  np.testing.assert_array_equal(labels, expected.labels)
  assert labels.dtype == expected.labels.dtype


def test_tfrecord_round_trip_with_globs(tmp_path):
  shards = [_classification(5), _classification(9, start=5)]
  for index, shard in enumerate(shards):
    data.write_tfrecord(str(tmp_path / f"train-{index}.tfrecord"), shard)
  validation, test = _classification(3), _classification(2)
  data.write_tfrecord(str(tmp_path / "validation.tfrecord"), validation)
  data.write_tfrecord(str(tmp_path / "test.tfrecord"), test)
  splits = data.tfrecord(train_files=str(tmp_path / "train-*.tfrecord"),
                         validation_files=[str(tmp_path / "validation.tfrecord")],
                         test_files=str(tmp_path / "test.tfrecord"), feature_shape=(2, 3),
                         num_classes=3, name="toy")
  _assert_equal(splits.train, _classification(9))  # Shards are read in sorted order.
  _assert_equal(splits.validation, validation)
  _assert_equal(splits.test, test)
  assert splits.name == "toy" and splits.num_classes == 3


def test_tfrecord_round_trip_regression(tmp_path):
  targets = ArrayData(np.ones((4, 3), np.float32), np.linspace(0, 1, 8, dtype=np.float32)
                      .reshape(4, 2))
  path = str(tmp_path / "r.tfrecord")
  data.write_tfrecord(path, targets, feature_key="x", label_key="y")
  splits = data.tfrecord(train_files=path, validation_files=path, test_files=path,
                         feature_key="x", label_key="y", feature_shape=[3], num_classes=None)
  _assert_equal(splits.test, targets)


def test_tfrecord_pattern_without_files_is_named(tmp_path):
  path = str(tmp_path / "data.tfrecord")
  data.write_tfrecord(path, _classification(3))
  with pytest.raises(FileNotFoundError, match=r"validation_files: no files match '.*nothing-\*'"):
    data.tfrecord(train_files=path, validation_files=str(tmp_path / "nothing-*"),
                  test_files=path, feature_shape=(2, 3), num_classes=3)


def test_tfrecord_regression_targets_must_agree_across_files(tmp_path):
  for name, size in (("a", 2), ("b", 3)):
    targets = ArrayData(np.ones((2, 1), np.float32), np.ones((2, size), np.float32))
    data.write_tfrecord(str(tmp_path / f"{name}.tfrecord"), targets)
  files = str(tmp_path / "*.tfrecord")
  expected = r"b\.tfrecord: record 0 has 3 values for 'label', expected 2"
  with pytest.raises(ValueError, match=expected):
    data.tfrecord(train_files=files, validation_files=files, test_files=files, feature_shape=[1],
                  num_classes=None)


@pytest.mark.parametrize("written_key, feature_shape, num_classes, message", [
    ("pixels", (2, 3), 3, r"data\.tfrecord: record 0 has no 'features' feature"),
    ("features", (7,), 3, r"data\.tfrecord: record 0 has 6 values for 'features', expected 7"),
    ("features", (2, 3), None, r"data\.tfrecord: record 0 stores 'label' as int64_list, expected float_list"),
])
def test_tfrecord_record_errors_name_the_file_and_key(tmp_path, written_key, feature_shape,
                                                      num_classes, message):
  path = str(tmp_path / "data.tfrecord")
  data.write_tfrecord(path, _classification(3), feature_key=written_key)
  with pytest.raises(ValueError, match=message):
    data.tfrecord(train_files=path, validation_files=path, test_files=path,
                  feature_shape=feature_shape, num_classes=num_classes)


# --- tfds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format, kind", [("tfrecord", RecordData), ("array_record", IndexedRecords)])
def test_tfds_loads_a_prepared_dataset_offline(tmp_path, file_format, kind):
  prepare_tiny_tfds(str(tmp_path), file_format)
  splits = data.tfds(name="tiny_digits", data_dir=str(tmp_path), validation_split="train[:2]")
  assert splits.num_classes == 3  # Inferred from the ClassLabel feature.
  assert [split.num_examples for _, split in splits.named_splits()] == [6, 2, 3]
  for _, split in splits.named_splits():
    assert isinstance(split, kind)  # array_record: read by index; TFRecord: streamed
    assert split.example_shape == (4, 4, 1) and split.features_dtype == np.uint8
    features, labels = pipeline.first_examples(split, split.num_examples)
    assert features.dtype == np.float32  # The pipeline scales uint8 to [0, 1].
    index = np.rint(features[:, 0, 0, 0] * 255 / 10).astype(int)
    np.testing.assert_allclose(features[:, 0, 0, 0], 10 * index / 255, rtol=1e-6)
    np.testing.assert_array_equal(labels, index % 3)
  test_features, _ = pipeline.first_examples(splits.test, 3)
  assert sorted(np.rint(test_features[:, 0, 0, 0] * 25.5)) == [9, 10, 11]


def test_tfds_errors(tmp_path):
  prepare_tiny_tfds(str(tmp_path / "prepared"))
  with pytest.raises(FileNotFoundError, match="'tiny_digits' is not prepared under data_dir="):
    data.tfds(name="tiny_digits", data_dir=str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="has no feature 'pixels'"):
    data.tfds(name="tiny_digits", data_dir=str(tmp_path / "prepared"), feature_key="pixels")
