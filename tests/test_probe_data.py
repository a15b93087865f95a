"""The Monitor's probe data on a real MirroredStrategy: each replica holds its share, read in replica
context."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tests.conftest import mirrored
from trainer.metrics.probe_data import ProbeData


def _shares(strategy, probe: ProbeData, count: int) -> list[tuple[list, list, list]]:
  """Each replica's (features, labels, weights) of the first `count` examples, as lists."""
  share = tf.function(lambda: strategy.run(lambda: tuple(probe.first(count))[:3]), autograph=False)()
  return [tuple(strategy.experimental_local_results(part)[replica].numpy().tolist() for part in share)
          for replica in range(strategy.num_replicas_in_sync)]


def test_replicas_hold_strided_shares_and_any_prefix_is_weighted_rows_of_them():
  strategy = mirrored(2)
  features = np.arange(10, dtype=np.float32).reshape(5, 2)  # example i is [2i, 2i + 1]
  labels = np.arange(5, dtype=np.int32)
  probe = ProbeData(strategy, (features, labels))
  # All 5: replica 0 holds examples 0, 2, 4; replica 1 holds 1, 3 and a zero row of weight 0.
  assert _shares(strategy, probe, 5) == [
      ([[0, 1], [4, 5], [8, 9]], [0, 2, 4], [1, 1, 1]),
      ([[2, 3], [6, 7], [0, 0]], [1, 3, 0], [1, 1, 0])]
  # The first 3: two rows each, example 3 weighted out.
  assert _shares(strategy, probe, 3) == [([[0, 1], [4, 5]], [0, 2], [1, 1]),
                                         ([[2, 3], [6, 7]], [1, 3], [1, 0])]
  assert _shares(strategy, probe, 99) == _shares(strategy, probe, 5)  # no more than is held


def test_one_replica_holds_the_examples_in_order():
  strategy = tf.distribute.get_strategy()
  features = np.arange(6, dtype=np.float32).reshape(3, 2)
  probe = ProbeData(strategy, (features, np.arange(3, dtype=np.int32)))
  assert _shares(strategy, probe, 2) == [([[0, 1], [2, 3]], [0, 1], [1, 1])]
