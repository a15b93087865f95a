"""The tf.data service as an option: the training stream's reading and preprocessing run on its workers.

One host's cores may not feed its accelerators (docs/PERFORMANCE.md, "Input throughput"); the tf.data
service (`tf.data.experimental.service`) moves the input pipeline to worker processes on other
machines, started next to a dispatcher (`DispatchServer`, `WorkerServer`), and streams the batches back.
Bind the dispatcher's address, e.g. `--gin_bindings="DataService.dispatcher='grpc://host:5050'"`.

How the work is shared, and what it costs in exactness:
- The dispatcher must list its workers (`DispatcherConfig(worker_addresses=...)`): the training stream
  is sharded statically (`ShardingPolicy.HINT`). Each worker builds the whole stream, which is cheap
  (indices, or serialized records), and reads, decodes and augments only every num_workers-th
  per-replica batch (`pipeline.train_dataset(..., service_sharding=True)`). Every batch is therefore
  exactly the batch the local pipeline would make at that step (same examples, same augmentation),
  and no example is lost or repeated.
- With one worker the stream arrives in order: training and resume are exact, bit for bit, as without
  the service. With N workers the batches arrive in the order the workers finish them, so runs of N
  consecutive batches may be permuted: a run is not reproducible bit for bit, and a resumed run sees
  from its step on the same batches as an uninterrupted one, in another order within such runs.
- Each training iterator is its own job (no `job_name`): nothing is shared between trainer hosts or
  survives a restart, so a resumed run starts a fresh job at its step (the order is still a pure
  function of (seed, step); no iterator state is saved).
- Evaluation stays on the trainer host: each host reads its own share of the split.
- The pipeline must run without Python (`trainer.data.input_graph`): a split read through a Python
  reader is refused, naming the loader to use.
"""

from __future__ import annotations

import gin
import tensorflow as tf


@gin.configurable
class DataService:
  """Where the training input pipeline runs: here (no dispatcher) or on the tf.data service.

  Args:
    dispatcher: the dispatcher's address, 'grpc://host:port' (or 'host:port'); None (default) reads on
      this host.
  """

  def __init__(self, *, dispatcher: str | None = None):
    if dispatcher is not None and (not isinstance(dispatcher, str) or not dispatcher.strip()):
      raise ValueError(f"DataService.dispatcher must be an address such as 'grpc://host:5050', got "
                       f"{dispatcher!r}")
    self.dispatcher = dispatcher

  @property
  def enabled(self) -> bool:
    return self.dispatcher is not None

  def distribute(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` (built with `service_sharding=self.enabled`) read from the service's workers, or as is."""
    if not self.enabled:
      return dataset
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.HINT, service=self.dispatcher))
