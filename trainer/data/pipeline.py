"""tf.data pipelines over in-memory splits, with a data order that is a pure function of (seed, step).

The training stream is the concatenation of per-epoch permutations, each drawn with a stateless RNG
from (seed, epoch). Batch `k` of the global stream is therefore known without replaying the past, so
a run resumed at step `s` continues exactly where it stopped (no iterator state in the checkpoint,
no re-reading from the start), and every worker agrees on the global batch: each takes its own
contiguous slice of it. The union of the replicas' examples in a step is the same global batch on 1,
2 or N replicas, which is what makes results replica-invariant.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.data import ArrayData

_FOREVER = 2**62


def per_replica_batch_size(global_batch_size: int, num_replicas: int) -> int:
  """The batch each replica sees; the global batch must split evenly."""
  if global_batch_size <= 0 or global_batch_size % num_replicas:
    raise ValueError(f"global batch size {global_batch_size} must be a positive multiple of the number of "
                     f"replicas ({num_replicas}); e.g. use "
                     f"{max(1, global_batch_size // num_replicas) * num_replicas}")
  return global_batch_size // num_replicas


def _pipeline_slice(global_batch_size: int, input_context) -> tuple[int, int]:
  """(start, size) of this input pipeline's share of each global batch."""
  if input_context is None:
    return 0, global_batch_size
  pipelines = input_context.num_input_pipelines
  share = global_batch_size // pipelines
  return input_context.input_pipeline_id * share, share


def _epoch_permutation(num_examples: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
  keys = tf.random.stateless_uniform([num_examples], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
  return tf.argsort(keys, stable=True)


def train_dataset(data: ArrayData, *, global_batch_size: int, seed: int, start_step: int,
                  input_context=None) -> tf.data.Dataset:
  """Infinite stream of per-replica (features, labels) batches, starting at global step `start_step`."""
  num_examples = data.num_examples
  if global_batch_size > num_examples:
    raise ValueError(f"global batch size {global_batch_size} exceeds the {num_examples} training examples")
  replicas = input_context.num_replicas_in_sync if input_context else 1
  batch = per_replica_batch_size(global_batch_size, replicas)
  offset = start_step * global_batch_size
  features, labels = tf.constant(data.features), tf.constant(data.labels)
  start, share = _pipeline_slice(global_batch_size, input_context)
  indices = (tf.data.Dataset.range(offset // num_examples, _FOREVER)
             .flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices(
                 _epoch_permutation(num_examples, seed, epoch)))
             .skip(offset % num_examples)
             .batch(global_batch_size, drop_remainder=True)
             .map(lambda global_batch: global_batch[start:start + share])
             .unbatch()
             .batch(batch, drop_remainder=True))
  return (indices.map(lambda i: (tf.gather(features, i), tf.gather(labels, i)),
                      num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))


def eval_dataset(data: ArrayData, *, global_batch_size: int, input_context=None) -> tf.data.Dataset:
  """Every example once, as per-replica (features, labels, weights) batches of static shape.

  The last global batch is padded with weight-0 copies of example 0, so shapes stay static (TPU,
  XLA) and every worker runs the same number of steps; weighted sums ignore the padding.
  """
  num_examples = data.num_examples
  replicas = input_context.num_replicas_in_sync if input_context else 1
  batch = per_replica_batch_size(global_batch_size, replicas)
  padded = -(-num_examples // global_batch_size) * global_batch_size
  index = tf.concat([tf.range(num_examples), tf.zeros([padded - num_examples], tf.int32)], axis=0)
  weight = tf.concat([tf.ones([num_examples]), tf.zeros([padded - num_examples])], axis=0)
  features, labels = tf.constant(data.features), tf.constant(data.labels)
  start, share = _pipeline_slice(global_batch_size, input_context)
  return (tf.data.Dataset.from_tensor_slices((index, weight))
          .batch(global_batch_size, drop_remainder=True)
          .map(lambda i, w: (i[start:start + share], w[start:start + share]))
          .unbatch()
          .batch(batch, drop_remainder=True)
          .map(lambda i, w: (tf.gather(features, i), tf.gather(labels, i), w))
          .prefetch(tf.data.AUTOTUNE))
