"""The MNIST-1D loader: the generator's examples, split as documented, and the process's RNGs untouched."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from trainer import data
from trainer.data.mnist1d import STANDARD_SEED, generate


@pytest.fixture(scope="module")
def standard_and_random_states() -> tuple[data.Splits, tuple, tuple]:
  """The default splits, generated afresh, and the global RNG states (before, after) around it.

  The generator seeds Python's and NumPy's global RNGs with 42 and draws from them: had the loader
  not restored them, they would not be the states 123 and 456 set here.
  """
  generate.cache_clear()
  random.seed(123)
  np.random.seed(456)
  before = (random.getstate(), np.random.get_state())
  splits = data.mnist1d()
  return splits, before, (random.getstate(), np.random.get_state())


@pytest.fixture(scope="module")
def standard(standard_and_random_states) -> data.Splits:
  return standard_and_random_states[0]


def _rows(features: np.ndarray) -> list[str]:
  return [hashlib.sha1(row.tobytes()).hexdigest() for row in features.astype(np.float32)]


def test_splits_have_the_documented_sizes_types_and_classes(standard):
  sizes = {name: split.num_examples for name, split in standard.named_splits()}
  assert sizes == {"train": 3500, "validation": 500, "test": 1000}
  for _, split in standard.named_splits():
    assert split.features.dtype == np.float32 and split.features.shape[1:] == (40,)
    assert split.labels.dtype == np.int32
  assert standard.num_classes == 10 and standard.name == "mnist1d"


def test_test_is_the_standard_test_set_and_train_plus_validation_the_standard_train_set(standard):
  # The generator's own arrays (cached), which the loader splits.
  train_signals, train_labels, test_signals, test_labels = generate(STANDARD_SEED)
  np.testing.assert_array_equal(standard.test.features, test_signals.astype(np.float32))
  np.testing.assert_array_equal(standard.test.labels, test_labels)
  ours = _rows(np.concatenate([standard.train.features, standard.validation.features]))
  assert sorted(ours) == sorted(_rows(train_signals))
  labels = dict(zip(_rows(train_signals), train_labels))
  assert all(labels[row] == label for row, label in zip(ours, np.concatenate(
      [standard.train.labels, standard.validation.labels])))


def test_validation_is_class_stratified(standard):
  expected = np.bincount(generate(STANDARD_SEED)[1], minlength=10) * 500 / 4000
  assert np.all(np.abs(np.bincount(standard.validation.labels, minlength=10) - expected) <= 1)


def test_generating_leaves_python_and_numpy_random_state_as_it_was(standard_and_random_states):
  _, (python_before, numpy_before), (python_after, numpy_after) = standard_and_random_states
  assert python_after == python_before
  assert numpy_after[0] == numpy_before[0] and np.array_equal(numpy_after[1], numpy_before[1])
  assert numpy_after[2:] == numpy_before[2:]


def test_label_noise_corrupts_exactly_the_fraction_of_train_labels_only(standard):
  noisy = data.mnist1d(label_noise=0.2)
  assert np.sum(noisy.train.labels != standard.train.labels) == round(0.2 * 3500)
  np.testing.assert_array_equal(noisy.validation.labels, standard.validation.labels)
  np.testing.assert_array_equal(noisy.test.labels, standard.test.labels)


def test_smaller_training_sets_are_nested_prefixes(standard):
  small = data.mnist1d(num_train=300)
  np.testing.assert_array_equal(small.train.features, standard.train.features[:300])


@pytest.mark.parametrize("kwargs, message", [
    ({"validation_size": 0}, "validation_size must be in \\[1, 3999\\]"),
    ({"num_train": 3501}, "num_train must be in \\[1, 3500\\]"),
    ({"label_noise": 1.5}, "label_noise must be in \\[0, 1\\]"),
])
def test_bad_sizes_name_the_argument(kwargs, message):
  with pytest.raises(ValueError, match=message):
    data.mnist1d(**kwargs)


@pytest.mark.parametrize("config", ["logistic", "mlp", "cnn", "gru"])
def test_shipped_configs_name_the_paper_protocol_and_their_model(config):
  import gin

  from trainer.config import parsing
  parsing.parse([f"gin_configs/mnist1d/{config}.gin"], [])
  assert gin.query_parameter("Trainer.data").configurable.name == "mnist1d"
  assert gin.query_parameter("Trainer.model").configurable.name.lower() == f"mnist1d{config}"
  assert (gin.query_parameter("Trainer.learning_rate"), gin.query_parameter("Trainer.batch_size"),
          gin.query_parameter("Trainer.train_steps")) == (1e-2, 100, 6000)
