"""Stochastic depth in every residual model: the linear rule, per-example drops, inference untouched, seeds.

A dropped residual branch shows in the model itself: the block's addition then returns its shortcut
input exactly (x + 0 = x in floating point), while a kept branch changes it. Counting, per block,
the examples whose addition equals its shortcut measures each block's drop probability directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import stochastic_depth
from tests import model_fixtures
from tests.model_fixtures import SMALL, build_small

RATE = 0.5
NUM_EXAMPLES = 2000
# family: (residual blocks, drop-path layers per block) of its small instance (tests/model_fixtures.py)
RESIDUAL_MODELS = {"CifarResNet": (3, 1), "PreActResNet": (8, 1), "WideResNet": (3, 1),
                   "ImageNetResNet": (16, 1), "ViT": (2, 2)}


@pytest.fixture
def small_models() -> dict[str, tf.keras.Model]:
  return model_fixtures.small_models()


@pytest.fixture(scope="module")
def with_drops() -> dict[str, tf.keras.Model]:
  """The small residual models again, with stochastic depth (`small_models` holds them without)."""
  tf.keras.utils.set_random_seed(0)
  return {family: build_small(family, stochastic_depth_rate=RATE) for family in RESIDUAL_MODELS}


def _inputs(family: str, num_examples: int) -> np.ndarray:
  shape = SMALL[family][2]
  return np.random.default_rng(1).normal(size=(num_examples, *shape)).astype(np.float32)


def _drop_layers(model: tf.keras.Model) -> list:
  return [layer for layer in model.layers if layer.name.endswith("drop_path")]


def test_linear_rule():
  assert stochastic_depth.linear_rates(0.5, 4) == pytest.approx([0.125, 0.25, 0.375, 0.5])
  assert stochastic_depth.linear_rates(0.0, 3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("family", RESIDUAL_MODELS)
def test_block_l_of_l_drops_with_probability_l_over_l_times_rate(family, with_drops, small_models):
  num_blocks, per_block = RESIDUAL_MODELS[family]
  expected = [RATE * block / num_blocks for block in range(1, num_blocks + 1) for _ in range(per_block)]
  assert [layer.rate for layer in _drop_layers(with_drops[family])] == pytest.approx(expected)
  assert not _drop_layers(small_models[family])  # no rate, no layer: the plain model is unchanged


@pytest.mark.parametrize("family", RESIDUAL_MODELS)
def test_residual_branch_is_dropped_per_example_with_its_block_probability(family, with_drops):
  """Tolerance: 5 binomial standard deviations per block (a false alarm has probability < 1e-6)."""
  model = with_drops[family]
  drops = _drop_layers(model)
  additions = [model.get_layer(layer.name.replace("drop_path", "add")) for layer in drops]
  probe = tf.keras.Model(model.input, [t for add in additions for t in (add.input[0], add.output)])
  outputs = [np.asarray(t) for t in probe(_inputs(family, NUM_EXAMPLES), training=True)]
  for index, drop in enumerate(drops):
    shortcut, total = outputs[2 * index], outputs[2 * index + 1]
    dropped = np.all((total == shortcut).reshape(NUM_EXAMPLES, -1), axis=1)
    tolerance = 5 * np.sqrt(drop.rate * (1 - drop.rate) / NUM_EXAMPLES)
    assert abs(dropped.mean() - drop.rate) < tolerance, (drop.name, dropped.mean(), drop.rate)


def test_a_kept_branch_is_scaled_so_its_expectation_is_unchanged(with_drops):
  drop = _drop_layers(with_drops["ImageNetResNet"])[-1]  # rate 0.5
  values = np.asarray(drop(tf.ones((NUM_EXAMPLES, 3, 3, 2)), training=True)).reshape(NUM_EXAMPLES, -1)
  assert np.all(values == values[:, :1]), "one decision per example"
  np.testing.assert_allclose(np.unique(values), [0.0, 1 / (1 - drop.rate)], rtol=1e-6)
  assert abs(values.mean() - 1) < 5 * np.sqrt(drop.rate / (1 - drop.rate) / NUM_EXAMPLES)


@pytest.mark.parametrize("family", RESIDUAL_MODELS)
def test_inference_output_does_not_depend_on_the_option(family, with_drops, small_models):
  with_option, plain = with_drops[family], small_models[family]
  for layer in plain.layers:
    if layer.weights:
      with_option.get_layer(layer.name).set_weights(layer.get_weights())
  x = _inputs(family, 8)
  # The features the head sees (ViT's zero-initialized head would hide any difference in the logits).
  features = [tf.keras.Model(model.input, model.get_layer("logits").input) for model in (with_option, plain)]
  np.testing.assert_array_equal(features[0](x, training=False), features[1](x, training=False))
  assert not np.array_equal(features[0](x, training=True), features[1](x, training=True))


def test_drops_repeat_under_the_same_seed():
  """Masks come from Keras' seeded streams: a layer made after the same seed drops the same examples."""
  x = tf.ones((256, 2, 2, 1))

  def masks(seed: int) -> np.ndarray:
    tf.keras.utils.set_random_seed(seed)
    return np.asarray(stochastic_depth.drop_path(RATE, rank=4, name="drop_path")(x, training=True))

  np.testing.assert_array_equal(masks(3), masks(3))
  assert not np.array_equal(masks(3), masks(4))
