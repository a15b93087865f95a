"""Replica-aware running means for metrics, summed across replicas when read.

Each accumulator is a pair of `SUM`-aggregated, `ON_READ`-synchronized variables: replicas add to
their local copies inside `strategy.run` (no cross-device traffic per step), and reading the value at
a loop boundary sums over replicas. The same code is exact under the default strategy, Mirrored,
MultiWorkerMirrored and TPU strategies, and works identically with Keras 2 and Keras 3 (Keras metric
objects do not).
"""

from __future__ import annotations

from typing import Iterable

import tensorflow as tf


class WeightedMean(tf.Module):
  """sum(value * weight) / sum(weight), accumulated in float32 (float64 for the weights)."""

  def __init__(self, name: str):
    super().__init__(name=name.replace("/", "_"))
    self.tag = name
    kwargs = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                  aggregation=tf.VariableAggregation.SUM)
    self.total = tf.Variable(0.0, dtype=tf.float64, **kwargs)
    self.weight = tf.Variable(0.0, dtype=tf.float64, **kwargs)

  def update(self, weighted_sum: tf.Tensor, weight: tf.Tensor) -> None:
    """Adds `weighted_sum` (a sum of value * weight over examples) and the summed `weight`."""
    self.total.assign_add(tf.cast(weighted_sum, tf.float64))
    self.weight.assign_add(tf.cast(weight, tf.float64))

  def reset(self) -> None:
    self.total.assign(tf.zeros_like(self.total))
    self.weight.assign(tf.zeros_like(self.weight))

  def result(self) -> tf.Tensor:
    return tf.math.divide_no_nan(self.total.read_value(), self.weight.read_value())


class MetricSet:
  """A named collection of accumulators, created on first use under the strategy scope."""

  def __init__(self, strategy: tf.distribute.Strategy, names: Iterable[str]):
    """Creates one accumulator per name under `strategy`'s scope."""
    with strategy.scope():
      self._metrics = {name: WeightedMean(name) for name in names}
    self._strategy = strategy
    # No tensor-dependent control flow: without AutoGraph, tracing does not rewrite the functions first.
    self._reset = tf.function(self._reset_fn, autograph=False)
    self._results = tf.function(self._results_fn, autograph=False)

  def _reset_replica(self) -> None:
    for metric in self._metrics.values():
      metric.reset()

  def _reset_fn(self) -> None:
    self._strategy.run(self._reset_replica)

  def _results_fn(self) -> dict[str, tf.Tensor]:
    return {name: metric.result() for name, metric in self._metrics.items()}

  def __getitem__(self, name: str) -> WeightedMean:
    return self._metrics[name]

  def reset(self) -> None:
    """Zeroes every replica's copy (in replica context: SUM variables refuse cross-replica assign)."""
    self._reset()

  def results(self) -> dict[str, float]:
    """Cross-replica values, read on the host in one call (once per loop, never per step)."""
    return {name: float(value) for name, value in self._results().items()}
