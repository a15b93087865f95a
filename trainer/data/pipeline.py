"""tf.data pipelines for every kind of split: the training stream and the padded evaluation pass.

Random-access splits (`ArrayData`, in RAM or memory-mapped, `IndexedData`, `IndexedRecords`): the
training stream is the concatenation of per-epoch permutations, each drawn with a stateless RNG from
(seed, epoch).
Batch `k` of the global stream is therefore known without replaying the past, so a run resumed at
step `s` continues exactly where it stopped (no iterator state in the checkpoint), and every worker
agrees on the global batch: each takes its own contiguous slice of it and reads only those examples.
The union of the replicas' examples in a step is the same global batch on 1, 2 or N replicas,
which is what makes results replica-invariant. The permutation is the only N-sized object (4 bytes
per example and epoch: 5 MB for ImageNet); the examples themselves are read by index (serialized
records a batch per Python call, then parsed and decoded in the graph).

Sequential splits (`RecordData`, TFRecord shards): each worker streams its own files (every
num_workers-th), in an order drawn from (seed, epoch, worker), interleaved deterministically
across files and permuted in windows of `shuffle_buffer` records by draws from the same seed. The
stream is thus a pure function of (seed, worker): a resumed run rebuilds the current epoch and
skips the serialized records already consumed (before any parsing or decoding), which is exact and
costs counting the worker's records plus at most one epoch of reading per resume; nothing is stored
in the checkpoint, and a fresh run reads nothing before its first batch. The order
depends on the number of workers, so sequential splits are not replica-invariant across different
worker counts (replicas within a worker still are).

Augmentation (`trainer.data.preprocessing`) is seeded by each example's position in the stream,
so it is exact and replica-invariant wherever the order is.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from trainer.data import diagnosis
from trainer.data.arrays import ArrayData
from trainer.data.preprocessing import ImagePreprocessing, example_seed
from trainer.data.sources import IndexedRecords, RecordData, file_records, input_error

_FOREVER = 2**62
_INTERLEAVED_FILES = 16  # Files read at once by a sequential training stream.
_AUTOTUNE = tf.data.AUTOTUNE


def per_replica_batch_size(global_batch_size: int, num_replicas: int) -> int:
  """The training batch each replica sees; the global batch must split evenly (no example is dropped)."""
  if global_batch_size <= 0 or global_batch_size % num_replicas:
    below = global_batch_size // num_replicas * num_replicas
    sizes = " or ".join(str(size) for size in (below, below + num_replicas) if size > 0)
    raise ValueError(f"global batch size {global_batch_size} must be a positive multiple of the number of "
                     f"replicas ({num_replicas}); e.g. use {sizes}")
  return global_batch_size // num_replicas


def eval_batch_size_for(global_batch_size: int, num_replicas: int) -> int:
  """The evaluation batch actually used: `global_batch_size` rounded up to a multiple of `num_replicas`.

  Evaluation weights every example and gives padding weight 0, so a larger batch changes nothing but
  the padding: an evaluation batch never has to divide the replica count (500 on 8 TPU cores runs as
  504, 63 per core).
  """
  if global_batch_size <= 0:
    raise ValueError(f"evaluation batch size must be positive, got {global_batch_size}")
  return -(-global_batch_size // num_replicas) * num_replicas


def _pipeline_slice(global_batch_size: int, input_context) -> tuple[int, int]:
  """(start, size) of this input pipeline's share of each global batch."""
  if input_context is None:
    return 0, global_batch_size
  pipelines = input_context.num_input_pipelines
  share = global_batch_size // pipelines
  return input_context.input_pipeline_id * share, share


def _replica_batch(global_batch_size: int, input_context) -> int:
  replicas = input_context.num_replicas_in_sync if input_context else 1
  return per_replica_batch_size(global_batch_size, replicas)


def _epoch_permutation(num_examples: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
  keys = tf.random.stateless_uniform([num_examples], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
  return tf.argsort(keys, stable=True)


def train_dataset(split, *, global_batch_size: int, seed: int, start_step: int, input_context=None,
                  preprocessing: ImagePreprocessing | None = None,
                  service_sharding: bool = False) -> tf.data.Dataset:
  """Infinite stream of per-replica (features, labels) batches, starting at global step `start_step`.

  With `service_sharding` the stream is built to run on tf.data service workers sharded by
  `ShardingPolicy.HINT` (`trainer.data.service`): each worker reads and preprocesses only every
  num_workers-th batch; without the service such a dataset does not run.
  """
  preprocessing = preprocessing or ImagePreprocessing()
  if isinstance(split, RecordData):
    if preprocessing.repeated_augmentation > 1:
      raise ValueError("ImagePreprocessing.repeated_augmentation needs a split read by index (arrays, TFDS "
                       "array_record); this one is streamed from TFRecord files")
    return _sequential_train(split, global_batch_size, seed, start_step, input_context, preprocessing,
                             service_sharding)
  num_examples = split.num_examples
  if global_batch_size > num_examples:
    raise ValueError(f"global batch size {global_batch_size} exceeds the {num_examples} training examples")
  offset = start_step * global_batch_size
  start, share = _pipeline_slice(global_batch_size, input_context)
  indices = (tf.data.Dataset.range(offset // num_examples, _FOREVER)
             .flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices(
                 preprocessing.epoch_order(_epoch_permutation(num_examples, seed, epoch))))
             .skip(offset % num_examples))
  positions = tf.data.Dataset.range(offset, _FOREVER)
  mine = (tf.data.Dataset.zip((indices, positions))
          .batch(global_batch_size, drop_remainder=True)
          .map(lambda index, position: (index[start:start + share], position[start:start + share]))
          .unbatch())
  batch = _replica_batch(global_batch_size, input_context)
  return _read_by_index(split, _service_shard(mine, batch, service_sharding), batch, preprocessing,
                        lambda position: example_seed(seed, position)).prefetch(_AUTOTUNE)


def _service_shard(stream: tf.data.Dataset, batch: int, service_sharding: bool) -> tf.data.Dataset:
  """`stream`, or on a tf.data service worker its every num_workers-th run of `batch` elements (the
  service replaces the `SHARD_HINT`s), before anything is read or decoded: the batches stay whole."""
  if not service_sharding:
    return stream
  hint = tf.data.experimental.SHARD_HINT
  return stream.batch(batch, drop_remainder=True).shard(hint, hint).unbatch()


def eval_dataset(split, *, global_batch_size: int, input_context=None,
                 preprocessing: ImagePreprocessing | None = None) -> tf.data.Dataset:
  """Every example once, as per-replica (features, labels, weights) batches of static shape.

  Padding examples carry weight 0, so shapes stay static (TPU, XLA) and every worker runs the same
  number of steps; weighted sums ignore the padding. A global batch that the replicas cannot split is
  rounded up (`eval_batch_size_for`). Each worker reads only its share of the split: a random-access
  split its slice of each global batch, a streamed one its own files (`_streamed_eval`).
  """
  preprocessing = preprocessing or ImagePreprocessing()
  replicas = input_context.num_replicas_in_sync if input_context else 1
  global_batch_size = eval_batch_size_for(global_batch_size, replicas)
  batch = _replica_batch(global_batch_size, input_context)
  if isinstance(split, RecordData):
    return _streamed_eval(split, global_batch_size, batch, input_context, preprocessing)
  num_examples = split.num_examples
  padded = -(-num_examples // global_batch_size) * global_batch_size
  weights = tf.concat([tf.ones([num_examples]), tf.zeros([padded - num_examples])], axis=0)
  index = tf.concat([tf.range(num_examples, dtype=tf.int64), tf.zeros([padded - num_examples], tf.int64)], 0)
  start, share = _pipeline_slice(global_batch_size, input_context)
  mine = (tf.data.Dataset.from_tensor_slices((index, weights))
          .batch(global_batch_size, drop_remainder=True)
          .map(lambda index, weights: (index[start:start + share], weights[start:start + share]))
          .unbatch())
  return _read_by_index(split, mine, batch, preprocessing, None).prefetch(_AUTOTUNE)


def _streamed_eval(split: RecordData, global_batch_size: int, batch: int, input_context,
                   preprocessing: ImagePreprocessing) -> tf.data.Dataset:
  """A streamed split's evaluation on this worker: its own files (every num_workers-th; with fewer
  files than workers, every num_workers-th record), padded with weight-0 copies of its first record
  to the number of batches the largest share needs, so that every worker runs as many steps.

  Only this worker's records are parsed and decoded, and with enough files only its files are read:
  evaluation costs each of N hosts 1/N of the split, not all of it.
  """
  worker, workers = ((input_context.input_pipeline_id, input_context.num_input_pipelines)
                     if input_context else (0, 1))
  by_file = len(split.files) >= workers
  total = split.num_examples  # counts every file once (evaluation needs the padding)
  shares = ([split.records_in(split.files[w::workers]) for w in range(workers)] if by_file
            else [len(range(w, total, workers)) for w in range(workers)])
  per_worker_batch = global_batch_size // workers
  padded = -(-max(shares) // per_worker_batch) * per_worker_batch
  records = split.records(split.files[worker::workers]) if by_file else split.records(split.files).shard(
      workers, worker)
  source = records if shares[worker] else split.records(split.files)  # a record to repeat
  padding = source.take(1).repeat(padded - shares[worker])
  weights = tf.concat([tf.ones([shares[worker]]), tf.zeros([padded - shares[worker]])], axis=0)
  examples = records.concatenate(padding).map(
      lambda record: _parsed_example(split, record, preprocessing, None), num_parallel_calls=_AUTOTUNE)
  return (tf.data.Dataset.zip((examples, tf.data.Dataset.from_tensor_slices(weights)))
          .map(lambda example, weight: (*example, weight))
          .batch(batch, drop_remainder=True)
          .map(lambda features, labels, weight: (preprocessing.transfer(features), labels, weight))
          .prefetch(_AUTOTUNE))


def first_examples(split, count: int, preprocessing: ImagePreprocessing | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
  """The first `count` examples of `split` (all if fewer) as the model sees them in evaluation.

  Reads those examples only: a streamed split is not counted (a fresh run's start-up, which takes
  the Monitor's probe batch from here, must not grow with the dataset). Raises a ValueError naming
  the file and record if one of them is bad.
  """
  if count < 1:
    raise ValueError("first_examples needs count >= 1")
  preprocessing = preprocessing or ImagePreprocessing()
  try:
    if isinstance(split, RecordData):
      dataset = (split.records(split.files).take(count)
                 .map(lambda record: _parsed_example(split, record, preprocessing, None))
                 .batch(count)
                 .map(lambda features, labels: (preprocessing.normalize(features), labels)))
      features, labels = next(iter(dataset))
    else:
      dataset = eval_dataset(split, global_batch_size=min(count, split.num_examples),
                             preprocessing=preprocessing)
      features, labels, _ = next(iter(dataset))
      features = preprocessing.on_device(features)  # normalized here, on the host
  except tf.errors.OpError as error:  # a damaged or bad record, named (with its file) in one line
    raise ValueError(diagnosis.culprit(split, error)) from error
  return features.numpy(), labels.numpy()


def _read_by_index(split, stream: tf.data.Dataset, batch: int, preprocessing: ImagePreprocessing,
                   seed_of) -> tf.data.Dataset:
  """Turns a stream of (index, extra) into per-replica (features, labels, extra) batches.

  `extra` is the example's stream position (training; `seed_of(position)` seeds its augmentation)
  or its evaluation weight (`seed_of` None, and it stays in the output). Arrays (in RAM or
  memory-mapped) and serialized records (`IndexedRecords`: one Python call reads a batch, parsing and
  decoding are in the graph) are read a whole batch at a time, in the stream's order; `IndexedData`
  example by example. Images that need per-example work (a crop, a flip, a resize) get it between
  reading and batching.
  """
  training = seed_of is not None

  def finish(features, label, extra):
    features = preprocessing.transfer(features)
    return (features, label) if training else (features, label, extra)

  if isinstance(split, ArrayData):
    read, labels = _array_reader(split), tf.constant(split.labels)
    read_batches = stream.batch(batch, drop_remainder=True).map(
        lambda index, extra: (read(index), tf.gather(labels, index), extra), num_parallel_calls=_AUTOTUNE)
    if not preprocessing.per_example(training):
      return read_batches.map(finish)
    examples = read_batches.unbatch()
  elif isinstance(split, IndexedRecords):
    records = (stream.batch(batch, drop_remainder=True)
               .map(lambda index, extra: (split.read_batch(index), extra), num_parallel_calls=_AUTOTUNE)
               .unbatch())
    return (records.map(lambda record, extra: (*_parsed_example(split, record, preprocessing,
                                                                seed_of(extra) if training else None), extra),
                        num_parallel_calls=_AUTOTUNE)
            .batch(batch, drop_remainder=True)
            .map(finish))
  else:
    examples = stream.map(lambda index, extra: (*split.read_tensors(index), extra),
                          num_parallel_calls=_AUTOTUNE)

  def transform(features, label, extra):
    return preprocessing.example(features, seed_of(extra) if training else None), label, extra

  return (examples.map(transform, num_parallel_calls=_AUTOTUNE)
          .batch(batch, drop_remainder=True)
          .map(finish))


def _array_reader(split: ArrayData):
  """`read(indices) -> features` for an array split: a gather from RAM, or rows read from its file."""
  if not split.memory_mapped:
    features = tf.constant(split.features)
    return lambda index: tf.gather(features, index)
  dtype = tf.as_dtype(split.features.dtype)
  rows = _RowFile.of(split.features)
  read_rows = rows.read if rows is not None else lambda i: np.asarray(split.features[i])

  def read(index):
    values = tf.numpy_function(read_rows, [index], dtype, stateful=False)
    values.set_shape(index.shape.concatenate(split.example_shape))
    return values
  return read


class _RowFile:
  """Rows of a whole memory-mapped .npy file, read with positional reads instead of through the map.

  Reading through the map would leave every page the kernel reads ahead mapped into the process
  (measured: ~2 MB of resident memory per random 3 KB image, the whole 3 GB file after a few
  hundred batches); `pread` copies just the rows and leaves the rest to the page cache, which the
  kernel reclaims as it likes. Only for what `np.load(mmap_mode='r')` returns: the whole file in C
  order (a slice of it falls back to indexing the map).
  """

  def __init__(self, path: str, offset: int, example_shape: tuple, dtype: np.dtype):
    self._path, self._offset = path, offset
    self._example_shape, self._dtype = example_shape, dtype
    self._row_bytes = int(np.prod(example_shape, dtype=np.int64)) * dtype.itemsize
    self._descriptor = None

  @classmethod
  def of(cls, array: np.memmap) -> _RowFile | None:
    path = getattr(array, "filename", None)
    whole = (path is not None and array.flags.c_contiguous and os.path.isfile(path)
             and os.path.getsize(path) == array.offset + array.nbytes)
    return cls(path, array.offset, array.shape[1:], array.dtype) if whole else None

  def read(self, indices: np.ndarray) -> np.ndarray:
    if self._descriptor is None:
      self._descriptor = os.open(self._path, os.O_RDONLY)
    scalar = np.ndim(indices) == 0
    indices = np.atleast_1d(indices)
    rows = np.empty((len(indices),) + tuple(self._example_shape), self._dtype)
    buffers = rows.reshape(len(indices), -1).view(np.uint8)
    for buffer, index in zip(buffers, indices):
      if os.preadv(self._descriptor, [buffer], self._offset + int(index) * self._row_bytes) < len(buffer):
        raise input_error(f"{self._path}: row {int(index)} is past the end of the file (truncated during "
                          "the run?)")
    return rows[0] if scalar else rows

  def __del__(self):
    if self._descriptor is not None:
      os.close(self._descriptor)


def _parsed_example(split: RecordData | IndexedRecords, record: tf.Tensor, preprocessing: ImagePreprocessing,
                    seed: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
  """One record parsed and preprocessed; a training crop of an encoded image decodes only its window."""
  if seed is not None and split.parse_encoded is not None and preprocessing.decodes_window(training=True):
    encoded, label = split.parse_encoded(record)
    return preprocessing.encoded_example(encoded, split.example_shape[-1], seed), label
  features, label = split.parse(record)
  return preprocessing.example(features, seed), label


def _window_shuffle(records: tf.data.Dataset, size: int, seed: tf.Tensor) -> tf.data.Dataset:
  """Permutes each run of `size` records by a stateless draw from (seed, window index).

  The stateless counterpart of a shuffle buffer of the same size (`Dataset.shuffle` cannot take a
  per-epoch seed computed inside the pipeline): the result depends on nothing but the seed, which
  is what lets a resumed run replay the epoch exactly.
  """
  def permuted(window: tf.Tensor, batch: tf.Tensor) -> tf.data.Dataset:
    keys = tf.random.stateless_uniform(tf.shape(batch)[:1], seed=tf.random.experimental.stateless_fold_in(
        seed, window))
    return tf.data.Dataset.from_tensor_slices(tf.gather(batch, tf.argsort(keys, stable=True)))
  return records.batch(size).enumerate().flat_map(permuted)


def _sequential_train(split: RecordData, global_batch_size: int, seed: int, start_step: int, input_context,
                      preprocessing: ImagePreprocessing, service_sharding: bool) -> tf.data.Dataset:
  worker, workers = ((input_context.input_pipeline_id, input_context.num_input_pipelines)
                     if input_context else (0, 1))
  files = split.worker_files(worker, workers)
  offset = start_step * (global_batch_size // workers)
  # A fresh stream starts at epoch 0; a resumed one counts this worker's records to find its place.
  count = split.records_in(files) if offset else 1
  names = tf.constant(files)
  firsts, counts = (tf.constant(values, tf.int64) for values in split.ranges(files))

  def epoch_records(epoch: tf.Tensor) -> tf.data.Dataset:
    epoch_seed = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), epoch]),
                                                          worker)
    file_seed, window_seed = tf.unstack(tf.random.experimental.stateless_split(epoch_seed, 2))
    order = tf.argsort(tf.random.stateless_uniform([len(files)], seed=file_seed), stable=True)
    records = (tf.data.Dataset.from_tensor_slices(tuple(tf.gather(values, order)
                                                        for values in (names, firsts, counts)))
               .interleave(file_records, cycle_length=min(len(files), _INTERLEAVED_FILES),
                           block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True))
    return _window_shuffle(records, split.shuffle_buffer, window_seed)

  records = (tf.data.Dataset.range(offset // count, _FOREVER)
             .flat_map(epoch_records)
             .skip(offset % count))
  stream = tf.data.Dataset.zip((records, tf.data.Dataset.range(offset, _FOREVER)))
  batch = _replica_batch(global_batch_size, input_context)
  return (_service_shard(stream, batch, service_sharding)
          .map(lambda record, position: _parsed_example(split, record, preprocessing,
                                                        example_seed(seed, position, worker)),
               num_parallel_calls=_AUTOTUNE)
          .batch(batch, drop_remainder=True)
          .map(lambda features, labels: (preprocessing.transfer(features), labels))
          .prefetch(_AUTOTUNE))
