"""Stochastic depth in every residual model: the linear rule, per-example drops, inference untouched, seeds.

A dropped residual branch shows in the model itself: the block's addition then returns its shortcut
input exactly (x + 0 = x in floating point), while a kept branch changes it. Counting, per block,
the examples whose addition equals its shortcut measures each block's drop probability directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import models
from models import stochastic_depth

RATE = 0.5
NUM_EXAMPLES = 2000
# family: (factory, small kwargs, input shape, residual blocks, drop-path layers per block)
RESIDUAL_MODELS = {
    "CifarResNet": (models.CifarResNet, {"depth": 14}, (8, 8, 3), 6, 1),
    "PreActResNet": (models.PreActResNet, {"width": 4}, (8, 8, 3), 8, 1),
    "WideResNet": (models.WideResNet, {"depth": 10, "width": 1}, (8, 8, 3), 3, 1),
    "ImageNetResNet": (models.ImageNetResNet, {"width": 4}, (16, 16, 3), 16, 1),
    "ViT": (models.ViT, {"variant": "Ti", "depth": 3}, (16, 16, 3), 3, 2),
}


def _build(family: str, rate: float) -> tf.keras.Model:
  factory, kwargs, shape, _, _ = RESIDUAL_MODELS[family]
  return factory(input_shape=shape, num_outputs=10, stochastic_depth_rate=rate, **kwargs)


@pytest.fixture(scope="module")
def with_drops() -> dict[str, tf.keras.Model]:
  tf.keras.utils.set_random_seed(0)
  return {family: _build(family, RATE) for family in RESIDUAL_MODELS}


@pytest.fixture(scope="module")
def without() -> dict[str, tf.keras.Model]:
  return {family: _build(family, 0.0) for family in RESIDUAL_MODELS}


def _inputs(family: str, num_examples: int) -> np.ndarray:
  shape = RESIDUAL_MODELS[family][2]
  return np.random.default_rng(1).normal(size=(num_examples, *shape)).astype(np.float32)


def _drop_layers(model: tf.keras.Model) -> list:
  return [layer for layer in model.layers if layer.name.endswith("drop_path")]


def test_linear_rule():
  assert stochastic_depth.linear_rates(0.5, 4) == pytest.approx([0.125, 0.25, 0.375, 0.5])
  assert stochastic_depth.linear_rates(0.0, 3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("family", RESIDUAL_MODELS)
def test_block_l_of_l_drops_with_probability_l_over_l_times_rate(family, with_drops, without):
  _, _, _, num_blocks, per_block = RESIDUAL_MODELS[family]
  expected = [RATE * block / num_blocks for block in range(1, num_blocks + 1) for _ in range(per_block)]
  assert [layer.rate for layer in _drop_layers(with_drops[family])] == pytest.approx(expected)
  assert not _drop_layers(without[family])  # no rate, no layer: the plain model is unchanged


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
def test_inference_output_does_not_depend_on_the_option(family, with_drops, without):
  with_option, plain = with_drops[family], without[family]
  for layer in plain.layers:
    if layer.weights:
      with_option.get_layer(layer.name).set_weights(layer.get_weights())
  kernel, bias = plain.get_layer("logits").get_weights()  # ViT's head starts at zero: make it see something
  random_head = [np.random.default_rng(2).normal(size=kernel.shape).astype(np.float32), bias]
  for model in (plain, with_option):
    model.get_layer("logits").set_weights(random_head)
  x = _inputs(family, 8)
  np.testing.assert_array_equal(with_option(x, training=False), plain(x, training=False))
  assert not np.array_equal(with_option(x, training=True), plain(x, training=True))


def test_drops_repeat_under_the_same_seed():
  """Masks come from Keras' seeded streams: a layer made after the same seed drops the same examples."""
  x = tf.ones((256, 2, 2, 1))

  def masks(seed: int) -> np.ndarray:
    tf.keras.utils.set_random_seed(seed)
    return np.asarray(stochastic_depth.drop_path(RATE, rank=4, name="drop_path")(x, training=True))

  np.testing.assert_array_equal(masks(3), masks(3))
  assert not np.array_equal(masks(3), masks(4))
