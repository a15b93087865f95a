"""Metric accumulators: compensated float32 sums (no 64-bit type in the step), exact across replicas."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tests.conftest import mirrored
from trainer.loop.accumulators import MetricSet


def _accumulate(strategy, values: np.ndarray, weights: np.ndarray) -> float:
  """Adds (values[i], weights[i]) on every replica, one pair per step, in one tf.function; the mean."""
  metrics = MetricSet(strategy, ["m"])

  @tf.function
  def run(values, weights):
    for index in tf.range(tf.shape(values)[0]):
      strategy.run(lambda v, w: metrics["m"].update(v, w), args=(values[index], weights[index]))

  metrics.reset()
  run(tf.constant(values), tf.constant(weights))
  return metrics.results()["m"]


def test_a_long_float32_sum_keeps_float64_accuracy():
  rng = np.random.default_rng(0)
  values = rng.uniform(0.0, 1.0, size=20000).astype(np.float32) * 1000
  weights = np.ones_like(values)
  exact = values.astype(np.float64).sum() / len(values)
  got = _accumulate(tf.distribute.get_strategy(), values, weights)
  naive = np.float32(0.0)
  for value in values:  # what an uncompensated float32 accumulator would read
    naive = np.float32(naive + value)
  assert abs(got - exact) / exact < 1e-6, (got, exact)
  assert abs(float(naive) / len(values) - exact) > 50 * abs(got - exact)  # the compensation matters


def test_exact_sums_read_as_their_float64_ratio_and_an_empty_mean_is_zero():
  correct = np.array([1.0] * 175 + [0.0] * 5, np.float32)
  assert _accumulate(tf.distribute.get_strategy(), correct, np.ones_like(correct)) == 175 / 180
  assert _accumulate(tf.distribute.get_strategy(), correct, np.zeros_like(correct)) == 0.0


def test_replicas_sum_their_local_accumulators():
  values = np.arange(1, 101, dtype=np.float32)
  weights = np.full_like(values, 2.0)
  # Each of the 2 replicas adds every pair: the mean of value*... is unchanged, the sums doubled.
  got = _accumulate(mirrored(2), values * weights, weights)
  assert got == (values.astype(np.float64) * 2).sum() / (2.0 * len(values))
