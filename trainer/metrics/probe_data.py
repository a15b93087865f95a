"""The Monitor's probe data: the first training examples, held on the devices in variables, shared by replica.

The Monitor evaluates the model on the first training examples at loop boundaries (the gradient-norm
and sharpness probe, the `train_eval/*` subset). Held as graph constants, they would be shipped with
every compiled function to every host (about 460 MB at 224 px); fed per call, they would cross from
host to device at every loop. Here they are written once, at build time, into non-trainable variables
that each replica reads inside `strategy.run`.

Each replica holds its own share (ON_READ variables, whose copies may differ): replica r of R holds
examples r, r + R, r + 2R, ... So the first n examples, for any n up to what is held, are the first
ceil(n / R) rows of every share, with weight 0 for the rows past n: the gradient-norm probe (256
examples by default) and the larger `train_eval/*` subset (512) are two views of one copy, and any
n works on any replica count (padded, like an evaluation batch). With one replica, the share is the
examples in order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf


class Share(NamedTuple):
  """This replica's part of the first `count` examples: rows with weight 1, padding rows with weight 0."""

  features: tf.Tensor
  labels: tf.Tensor
  weights: tf.Tensor  # float32, 1 for the replica's examples among the first `count`, else 0
  count: int  # over all replicas: the divisor of a mean


class ProbeData:
  """The first training examples, shared out over the replicas of `strategy` (see the module docstring).

  Create it in cross-replica context (the builder does); read `first(n)` inside `strategy.run`.
  """

  def __init__(self, strategy: tf.distribute.Strategy, examples: tuple[np.ndarray, np.ndarray]):
    features, labels = examples
    self.count = len(features)
    self._replicas = strategy.num_replicas_in_sync
    rows = -(-self.count // self._replicas)

    def share_variable(values: np.ndarray, name: str) -> tf.Variable:
      # ON_READ: each replica keeps its own copy, written and read in replica context only.
      return tf.Variable(tf.zeros((rows,) + values.shape[1:], values.dtype), trainable=False, name=name,
                         synchronization=tf.VariableSynchronization.ON_READ,
                         aggregation=tf.VariableAggregation.NONE)

    with strategy.scope():
      self._features = share_variable(features, "probe_features")
      self._labels = share_variable(labels, "probe_labels")

    def share(context: tf.distribute.InputContext) -> tuple[np.ndarray, np.ndarray]:
      replica = context.replica_id_in_sync_group
      return tuple(_padded(values[replica::self._replicas], rows) for values in (features, labels))

    # Compiled, so that each replica's share is assigned on its device in one call (the shares are the
    # function's inputs, not constants).
    assign = tf.function(lambda shares: strategy.run(self._assign, args=shares), autograph=False)
    assign(strategy.experimental_distribute_values_from_function(share))

  def _assign(self, features: tf.Tensor, labels: tf.Tensor) -> None:
    self._features.assign(features)
    self._labels.assign(labels)

  def first(self, count: int) -> Share:
    """This replica's share of the first `count` examples (all held, if fewer); call in replica context."""
    count = min(count, self.count)
    rows = -(-count // self._replicas)
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    held = tf.cast(replica, tf.int32) + self._replicas * tf.range(rows, dtype=tf.int32)  # example indices
    return Share(self._features[:rows], self._labels[:rows], tf.cast(held < count, tf.float32), count)


def _padded(values: np.ndarray, rows: int) -> np.ndarray:
  """`values` with zero rows appended up to `rows` rows."""
  padding = np.zeros((rows - len(values),) + values.shape[1:], values.dtype)
  return np.concatenate([values, padding])
