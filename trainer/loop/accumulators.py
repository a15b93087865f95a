"""Replica-aware running means for metrics, summed across replicas when read.

Each accumulator is a pair of compensated float32 sums held in `SUM`-aggregated, `ON_READ`-synchronized
variables: replicas add to their local copies inside `strategy.run` (no cross-device traffic per step),
and reading the value at a loop boundary sums over replicas. Nothing here is 64-bit (TPUs have no
native float64); the division happens on the host. The same code is exact under the default strategy,
Mirrored, MultiWorkerMirrored and TPU strategies, and works identically with Keras 2 and Keras 3 (Keras
metric objects do not).
"""

from __future__ import annotations

from typing import Iterable

import tensorflow as tf


class CompensatedSum(tf.Module):
  """A float32 running sum with Kahan's compensation: no 64-bit type in the step, float64-like accuracy.

  XLA:TPU has no native float64 (it rejects or emulates it), so nothing inside a compiled step may
  accumulate in it. A plain float32 sum over a long loop loses the low bits of every addend once the
  sum is large; Kahan's compensation `c` carries them to the next addition, so the error stays at a few
  float32 ulps of the sum, independent of the number of steps. Integers (example counts, correct
  predictions) are summed exactly up to 2**24 per addend's scale, as in float64.
  """

  def __init__(self, name: str, **variable_kwargs):
    super().__init__(name=name)
    self.sum = tf.Variable(0.0, dtype=tf.float32, name="sum", **variable_kwargs)
    self.compensation = tf.Variable(0.0, dtype=tf.float32, name="compensation", **variable_kwargs)

  def add(self, value: tf.Tensor) -> None:
    corrected = tf.cast(value, tf.float32) - self.compensation
    total = self.sum + corrected
    self.compensation.assign((total - self.sum) - corrected)
    self.sum.assign(total)

  def reset(self) -> None:
    self.sum.assign(tf.zeros_like(self.sum))
    self.compensation.assign(tf.zeros_like(self.compensation))

  def parts(self) -> tuple[tf.Tensor, tf.Tensor]:
    """(sum, compensation), each summed over replicas when read; the value is `sum - compensation`."""
    return self.sum.read_value(), self.compensation.read_value()


class WeightedMean(tf.Module):
  """sum(value * weight) / sum(weight), both compensated float32 sums; divided on the host in float64.

  The host division keeps exact sums exact: an accuracy of 175 correct out of 180 reads as the float64
  175 / 180, as when the sums were float64.
  """

  def __init__(self, name: str):
    super().__init__(name=name.replace("/", "_"))
    self.tag = name
    kwargs = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                  aggregation=tf.VariableAggregation.SUM)
    self.total = CompensatedSum("total", **kwargs)
    self.weight = CompensatedSum("weight", **kwargs)

  def update(self, weighted_sum: tf.Tensor, weight: tf.Tensor) -> None:
    """Adds `weighted_sum` (a sum of value * weight over examples) and the summed `weight`."""
    self.total.add(weighted_sum)
    self.weight.add(weight)

  def reset(self) -> None:
    self.total.reset()
    self.weight.reset()

  def parts(self) -> tuple[tf.Tensor, ...]:
    """Summed over replicas: total, its compensation, weight, its compensation (see `mean_of_parts`)."""
    return (*self.total.parts(), *self.weight.parts())


def mean_of_parts(parts) -> float:
  """A `WeightedMean`'s value from its read parts, in float64 on the host (0 when nothing was added)."""
  total, total_compensation, weight, weight_compensation = (float(part) for part in parts)
  weight -= weight_compensation
  return (total - total_compensation) / weight if weight else 0.0


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

  def _results_fn(self) -> dict[str, tuple[tf.Tensor, ...]]:
    return {name: metric.parts() for name, metric in self._metrics.items()}

  def __getitem__(self, name: str) -> WeightedMean:
    return self._metrics[name]

  def reset(self) -> None:
    """Zeroes every replica's copy (in replica context: SUM variables refuse cross-replica assign)."""
    self._reset()

  def results(self) -> dict[str, float]:
    """Cross-replica values, read on the host in one call (once per loop, never per step)."""
    return {name: mean_of_parts(parts) for name, parts in self._results().items()}
