"""Tests for trainer/weight_stats.py against numpy on random tensors with planted exact zeros."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.metrics import weight_stats

MODES = ["eager", "tf_function"]
SHAPES = [(7, 5), (5,), (3, 3, 2, 4), (1,)]


def _run(mode: str, fn):
  """Calls `fn()` eagerly or as a fresh `tf.function`."""
  return fn() if mode == "eager" else tf.function(fn)()


@pytest.fixture
def arrays() -> list[np.ndarray]:
  """Random float32 arrays of different sizes, each with a different share of exact zeros."""
  rng = np.random.default_rng(0)
  arrays = []
  for index, shape in enumerate(SHAPES):
    a = rng.normal(size=shape).astype(np.float32)
    a[rng.random(size=shape) < 0.15 * index] = 0.0
    arrays.append(a)
  return arrays


def _flat(arrays) -> np.ndarray:
  return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


@pytest.mark.parametrize("mode", MODES)
def test_norms_match_numpy(mode, arrays):
  variables = [tf.Variable(a) for a in arrays]
  l2, l1 = _run(mode, lambda: (weight_stats.global_l2_norm(variables),
                               weight_stats.global_l1_norm(variables)))
  assert l2.dtype == tf.float32 and l1.dtype == tf.float32
  np.testing.assert_allclose(l2.numpy(), np.linalg.norm(_flat(arrays)), rtol=1e-6)
  np.testing.assert_allclose(l1.numpy(), np.abs(_flat(arrays)).sum(), rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_zero_fractions_are_count_weighted(mode, arrays):
  tensors = [tf.constant(a) for a in arrays]
  flat = _flat(arrays)
  zeros, near = _run(mode, lambda: (weight_stats.zero_fraction(tensors),
                                    weight_stats.near_zero_fraction(tensors, 0.3)))
  assert 0 < np.mean(flat == 0) < 0.5
  np.testing.assert_allclose(zeros.numpy(), np.mean(flat == 0), rtol=1e-6)
  np.testing.assert_allclose(near.numpy(), np.mean(np.abs(flat) < 0.3), rtol=1e-6)
  per_tensor_mean = np.mean([np.mean(a == 0) for a in arrays])
  assert abs(per_tensor_mean - np.mean(flat == 0)) > 0.01  # The two definitions differ here.


def test_near_zero_threshold_is_strict():
  tensor = tf.constant([-0.5, 0.5, 0.49, 0.0])
  assert weight_stats.near_zero_fraction([tensor], 0.5).numpy() == 0.5


@pytest.mark.parametrize("mode", MODES)
def test_distance_matches_numpy(mode, arrays):
  rng = np.random.default_rng(1)
  references = [a + rng.normal(size=a.shape).astype(np.float32) for a in arrays]
  variables = [tf.Variable(a) for a in arrays]
  got = _run(mode, lambda: weight_stats.distance(variables, [tf.constant(r) for r in references]))
  np.testing.assert_allclose(got.numpy(), np.linalg.norm(_flat(arrays) - _flat(references)),
                             rtol=1e-6)


def test_distance_rejects_lists_of_different_lengths(arrays):
  with pytest.raises(ValueError, match="references"):
    weight_stats.distance(arrays, arrays[:-1])


def test_empty_list_gives_zeros():
  for fn in (weight_stats.global_l2_norm, weight_stats.global_l1_norm,
             weight_stats.zero_fraction):
    assert fn([]).numpy() == 0.0
  assert weight_stats.near_zero_fraction([], 0.1).numpy() == 0.0


def test_other_float_dtypes_give_float32():
  tensor = tf.constant([3.0, 0.0, -4.0], tf.float16)
  assert weight_stats.global_l2_norm([tensor]).dtype == tf.float32
  assert weight_stats.global_l2_norm([tensor]).numpy() == 5.0
  assert weight_stats.zero_fraction([tf.constant([0.0, 1.0], tf.float64)]).dtype == tf.float32


def _model() -> tf.keras.Model:
  """Dense and conv layers with kernels, layers without, and a nested sub-model.

  `dense>a` is a name both Keras 2 (name-scope rules) and Keras 3 accept but a summary tag does not.
  """
  block = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(8, name="dense>a")],
                              name="block")
  inputs = tf.keras.Input((6, 6, 1))
  h = tf.keras.layers.Conv2D(2, 3, name="conv")(inputs)
  h = tf.keras.layers.BatchNormalization(name="bn")(h)
  h = tf.keras.layers.Flatten(name="flatten")(h)
  h = tf.keras.layers.Dense(8, name="hidden")(h)
  h = block(h)
  outputs = tf.keras.layers.Dense(3, name="logits")(tf.keras.layers.Dropout(0.5)(h))
  return tf.keras.Model(inputs, outputs, name="net")


def test_per_layer_kernel_l2_names_and_values():
  model = _model()
  norms = weight_stats.per_layer_kernel_l2(model)
  assert sorted(norms) == ["conv", "dense_a", "hidden", "logits"]
  layers = {"conv": model.get_layer("conv"), "hidden": model.get_layer("hidden"),
            "logits": model.get_layer("logits"),
            "dense_a": model.get_layer("block").get_layer("dense>a")}
  for name, layer in layers.items():
    assert norms[name].dtype == tf.float32
    np.testing.assert_allclose(norms[name].numpy(), np.linalg.norm(layer.kernel.numpy()),
                               rtol=1e-6)


def test_per_layer_kernel_l2_dedupes_names_and_runs_in_tf_function():
  inner = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(4, name="proj")],
                              name="inner")
  inputs = tf.keras.Input((4,))
  outputs = tf.keras.layers.Dense(4, name="proj")(inner(inputs))
  model = tf.keras.Model(inputs, outputs)
  eager = weight_stats.per_layer_kernel_l2(model)
  graph = tf.function(lambda: weight_stats.per_layer_kernel_l2(model))()
  assert sorted(eager) == sorted(graph) == ["proj", "proj_1"]
  for name in eager:
    np.testing.assert_allclose(graph[name].numpy(), eager[name].numpy(), rtol=1e-6)
