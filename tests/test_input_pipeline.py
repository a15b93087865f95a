"""The data order is a pure function of (seed, step): resumable, epoch-complete, replica-invariant."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import ArrayData
from trainer.data import pipeline as input_pipeline

N = 37  # deliberately not a multiple of any batch size used here


def _data() -> ArrayData:
  features = np.arange(N, dtype=np.float32).reshape(N, 1)
  return ArrayData(features=features, labels=np.arange(N, dtype=np.int32))


def _ids(dataset, batches: int) -> list[list[int]]:
  return [labels.numpy().tolist() for _, labels in dataset.take(batches)]


def test_resuming_at_step_k_yields_exactly_batches_k_onwards():
  full = _ids(input_pipeline.train_dataset(_data(), global_batch_size=8, seed=3, start_step=0), 20)
  for start in (1, 4, 5, 13):
    resumed = _ids(input_pipeline.train_dataset(_data(), global_batch_size=8, seed=3, start_step=start),
                   20 - start)
    assert resumed == full[start:]


def test_stream_is_a_sequence_of_permutations_that_differ_by_epoch_and_seed():
  stream = np.concatenate(
      _ids(input_pipeline.train_dataset(_data(), global_batch_size=1, seed=3, start_step=0), 3 * N))
  epochs = stream.reshape(3, N)
  for epoch in epochs:
    assert sorted(epoch) == list(range(N))
  assert not np.array_equal(epochs[0], epochs[1])
  other_seed = np.concatenate(
      _ids(input_pipeline.train_dataset(_data(), global_batch_size=1, seed=4, start_step=0), N))
  assert not np.array_equal(other_seed, epochs[0])


def test_replicas_and_workers_split_each_global_batch_exactly():
  """2 workers x 2 replicas each see disjoint quarters whose union is the single-device global batch."""
  single = _ids(input_pipeline.train_dataset(_data(), global_batch_size=8, seed=1, start_step=2), 5)
  per_worker = []
  for worker in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                         num_replicas_in_sync=4)
    dataset = input_pipeline.train_dataset(_data(), global_batch_size=8, seed=1, start_step=2,
                                           input_context=context)
    per_worker.append(_ids(dataset, 10))  # each worker feeds 2 local replicas per step
  for step in range(5):
    pieces = [per_worker[w][2 * step + r] for w in range(2) for r in range(2)]
    assert all(len(piece) == 2 for piece in pieces)
    assert sum(pieces, []) == single[step]


def test_eval_covers_every_example_once_with_static_padded_batches():
  context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
  dataset = input_pipeline.eval_dataset(_data(), global_batch_size=10, input_context=context)
  seen, shapes = [], set()
  for _, labels, weights in dataset:
    shapes.add(tuple(labels.shape))
    seen += [int(label) for label, w in zip(labels.numpy(), weights.numpy()) if w == 1.0]
    assert set(weights.numpy().tolist()) <= {0.0, 1.0}
  assert shapes == {(5,)}
  assert sorted(seen) == list(range(N))


def test_an_eval_batch_the_replicas_cannot_split_is_rounded_up_and_still_exact():
  """10 on 4 replicas runs as 12 (3 per replica): every example once, the rest weight-0 padding."""
  assert input_pipeline.eval_batch_size_for(500, 8) == 504
  assert input_pipeline.eval_batch_size_for(1000, 32) == 1024
  context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=4)
  seen, shapes = [], set()
  for _, labels, weights in input_pipeline.eval_dataset(_data(), global_batch_size=10, input_context=context):
    shapes.add(tuple(labels.shape))
    seen += [int(label) for label, w in zip(labels.numpy(), weights.numpy()) if w == 1.0]
  assert shapes == {(3,)} and sorted(seen) == list(range(N))


def test_indivisible_training_batch_is_a_clear_error_naming_sizes_that_work():
  message = (r"global batch size 10 must be a positive multiple of the number of replicas \(4\); "
             r"e.g. use 8 or 12")
  with pytest.raises(ValueError, match=message):
    input_pipeline.per_replica_batch_size(10, 4)


def test_batch_larger_than_the_data_is_a_clear_error():
  with pytest.raises(ValueError, match="exceeds the 37 training examples"):
    input_pipeline.train_dataset(_data(), global_batch_size=64, seed=0, start_step=0)
