"""The input graph: batched array_record reads, the fused JPEG crop, the no-Python check, the tf.data service.

- TFDS array_record splits are read a batch of serialized records per Python call, parsed and decoded
  in the graph, in the stream's exact (seed, position) order, so resume stays exact.
- A random-resized crop of a JPEG decodes only its window (`tf.image.decode_and_crop_jpeg`): the same
  window as decoding the whole image and slicing it, and the same pixels up to libjpeg's chroma
  upsampling on the window's 1-pixel border (measured here against the full decode).
- A split whose pipeline calls Python is refused where the input graph must run without it (a TPU
  host, the tf.data service), naming the loader to use; checked on the dataset's own graph.
- The tf.data service option runs the training stream on a real dispatcher and workers on localhost:
  with one worker the stream is the local one exactly; with two, every batch is a local batch.
"""

from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pytest
import tensorflow as tf

import trainer
from tests.helpers import QUICKSTART, prepare_tiny_tfds
from trainer import data
from trainer.benchmarks.input_throughput import smooth_images
from trainer.data import ArrayData, ImagePreprocessing, diagnosis, input_graph, pipeline
from trainer.data.preprocessing import example_seed
from trainer.data.service import DataService
from trainer.data.sources import IndexedRecords

CROP = dict(image_size=24, train_crop="random_resized", flip=True)


@pytest.fixture(scope="module")
def tiny_directory(tmp_path_factory) -> str:
  """TFDS `tiny_digits` prepared as array_record: 6 training images of 4x4, pixel value 10*i, label i % 3."""
  directory = str(tmp_path_factory.mktemp("tfds"))
  prepare_tiny_tfds(directory, "array_record")
  return directory


@pytest.fixture(scope="module")
def tiny_array_record(tiny_directory):
  return data.tfds(name="tiny_digits", data_dir=tiny_directory, validation_split="train[:2]")


def _indices(batch: np.ndarray) -> list[int]:
  return [int(i) for i in np.rint(batch[:, 0, 0, 0] * 255 / 10)]


def test_array_record_reads_a_batch_per_python_call_in_the_stream_s_order(tiny_array_record):
  """Each Python call reads one whole batch of records; the order is the permutation of (seed, epoch)
  (computed here by `_epoch_permutation` alone) and a resumed stream continues it exactly."""
  calls = []
  split = tiny_array_record.train
  assert isinstance(split, IndexedRecords)

  def counted(indices):
    calls.append(len(indices))
    return split.read_records(indices)
  counting = dataclasses.replace(split, read_records=counted)
  stream = pipeline.train_dataset(counting, global_batch_size=2, seed=4, start_step=0)
  seen = [_indices(x.numpy()) for x, _ in stream.take(6)]  # two epochs of 6
  order = np.concatenate([pipeline._epoch_permutation(6, 4, tf.constant(e, tf.int64)).numpy()
                          for e in range(2)])
  stored = [int(split.parse(tf.constant(record))[0][0, 0, 0]) // 10  # record j's image, read on its own
            for record in split.read_records(np.arange(6))]
  assert sum(seen, []) == [stored[j] for j in order]
  assert set(calls) == {2}  # one call per batch of two records (prefetching may have read a few more)
  resumed = pipeline.train_dataset(split, global_batch_size=2, seed=4, start_step=4)
  assert [_indices(x.numpy()) for x, _ in resumed.take(2)] == seen[4:6]


def test_array_record_records_are_parsed_in_the_graph_and_class_ids_checked_there(tiny_directory):
  """Images and labels come from TFDS's graph-mode deserializer (image 10*i has label i % 3); a class
  id outside [0, num_classes) fails the parse with a message naming the dataset, split and directory."""
  split = data.tfds(name="tiny_digits", data_dir=tiny_directory).train
  parsed = [split.parse(tf.constant(record)) for record in split.read_records(np.arange(6))]
  generated = sorted(int(image[0, 0, 0]) // 10 for image, _ in parsed)
  assert generated == list(range(6))
  assert all(int(label) == int(image[0, 0, 0]) // 10 % 3 for image, label in parsed)
  narrowed = data.tfds(name="tiny_digits", data_dir=tiny_directory, num_classes=2).train
  with pytest.raises(tf.errors.InvalidArgumentError) as failure:
    for _ in pipeline.train_dataset(narrowed, global_batch_size=6, seed=0, start_step=0).take(1):
      pass
  expected = f"TFDS tiny_digits split 'train' in {tiny_directory}: 'label' is a class id outside "
  assert diagnosis.reason(failure.value) == expected + "[0, num_classes=2): 2"


def _jpeg(height: int, width: int, seed: int = 0) -> tf.Tensor:
  return tf.io.encode_jpeg(smooth_images(1, height, width, np.random.default_rng(seed))[0], quality=90)


@pytest.mark.parametrize("sampler", ["inception", "torchvision"])
def test_the_fused_jpeg_crop_decodes_the_same_window_as_decode_then_slice(sampler):
  """40 windows on 3 image sizes: `decode_and_crop_jpeg` on the window `crop_window` draws equals the
  slice of the full decode inside the window's 1-pixel border, and within 8 levels on it (libjpeg
  upsamples chroma from neighbours the cropped decode does not read; measured: at most 7, on about
  0.1% of a window's pixels); the whole augmented example then differs by at most 8/255."""
  preprocessing = ImagePreprocessing(crop_sampler=sampler, **CROP)
  for height, width in ((300, 400), (333, 500), (480, 317)):
    encoded = _jpeg(height, width)
    whole = tf.io.decode_jpeg(encoded, channels=3)
    for index in range(40):
      seed = tf.constant([index, 11], tf.int64)
      crop_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
      begin, size = preprocessing.crop_window(tf.image.extract_jpeg_shape(encoded), crop_seed)
      from_pixels = preprocessing.crop_window(tf.shape(whole), crop_seed)
      assert [begin.numpy().tolist(), size.numpy().tolist()] == [v.numpy().tolist() for v in from_pixels]
      window = tf.stack([begin[0], begin[1], size[0], size[1]])
      fused = tf.image.decode_and_crop_jpeg(encoded, window, channels=3).numpy().astype(int)
      sliced = tf.slice(whole, begin, size).numpy().astype(int)
      assert fused.shape == sliced.shape
      np.testing.assert_array_equal(fused[1:-1, 1:-1], sliced[1:-1, 1:-1])
      assert np.abs(fused - sliced).max() <= 8
      example = preprocessing.encoded_example(encoded, 3, seed)
      np.testing.assert_allclose(example, preprocessing.example(whole, seed), atol=8 / 255, rtol=0)


def test_the_crop_window_is_tensorflow_s_inception_box_for_the_same_seed():
  """The default sampler's window is `stateless_sample_distorted_bounding_box` with the documented
  ranges, called here directly: the refactoring into `crop_window` changed no window."""
  preprocessing = ImagePreprocessing(**CROP)
  for index in range(20):
    seed = tf.constant([index, 3], tf.int64)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        [300, 400, 3], bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    got = preprocessing.crop_window(tf.constant([300, 400, 3]), seed)
    assert [v.numpy().tolist() for v in got] == [begin.numpy().tolist(), size.numpy().tolist()]


def test_a_png_stored_image_is_decoded_whole_and_cropped_the_same_way():
  image = smooth_images(1, 40, 50, np.random.default_rng(1))[0]
  preprocessing = ImagePreprocessing(**CROP)
  seed = tf.constant([5, 6], tf.int64)
  np.testing.assert_array_equal(preprocessing.encoded_example(tf.io.encode_png(image), 3, seed),
                                preprocessing.example(tf.constant(image), seed))


def test_plain_bilinear_halving_is_the_mean_of_each_2x2_block_and_antialiasing_differs():
  """`antialias=False` is Model Garden's plain bilinear resize: halving samples midway between pixel
  pairs, the mean of each 2x2 block (numpy); the default antialiased filter also weighs the neighbours."""
  image = np.random.default_rng(4).uniform(size=(8, 8, 3)).astype(np.float32)
  blocks = image.reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
  plain = ImagePreprocessing(image_size=4, antialias=False).example(tf.constant(image), None)
  np.testing.assert_allclose(plain, blocks, atol=1e-6)
  assert np.abs(ImagePreprocessing(image_size=4).example(tf.constant(image), None) - blocks).max() > 1e-3


def test_streamed_jpegs_of_varying_size_take_the_fused_path(tmp_path):
  """A tfrecord split of JPEGs of varying size hands preprocessing the encoded bytes in training: the
  batch is `encoded_example` of each record with its position's seed, bit for bit."""
  images = ArrayData(smooth_images(4, 30, 40, np.random.default_rng(2)), np.arange(4, dtype=np.int32))
  data.write_tfrecord(str(tmp_path / "jpegs"), images, image_format="jpeg")
  split = data.tfrecord(train_files=str(tmp_path / "jpegs"), validation_files=str(tmp_path / "jpegs"),
                        test_files=str(tmp_path / "jpegs"), feature_shape=(None, None, 3),
                        num_classes=4).train
  assert split.parse_encoded is not None
  preprocessing = ImagePreprocessing(**CROP)
  features, labels = next(iter(pipeline.train_dataset(split, global_batch_size=4, seed=1, start_step=0,
                                                      preprocessing=preprocessing)))
  records = list(tf.data.TFRecordDataset(split.files))
  for position, (got, label) in enumerate(zip(features, labels)):
    encoded, _ = split.parse_encoded(records[int(label)])
    seed = example_seed(1, tf.constant(position, tf.int64))
    np.testing.assert_array_equal(got, preprocessing.encoded_example(encoded, 3, seed))


# --- Python in the input graph --------------------------------------------------------------------


def test_the_graph_scan_finds_a_numpy_function():
  python = tf.data.Dataset.range(4).map(lambda i: tf.numpy_function(lambda v: v, [i], tf.int64))
  assert input_graph.python_ops(python) == ["PyFunc"]
  assert input_graph.python_ops(tf.data.Dataset.range(4).map(lambda i: i + 1)) == []


def test_a_split_read_through_python_is_refused_naming_the_tfrecord_loader(tiny_array_record, tmp_path):
  """TFDS array_record and memory-mapped .npy pipelines hold Python; a TFRecord stream does not."""
  images = ArrayData(np.zeros((8, 4, 4, 1), np.uint8), np.zeros(8, np.int32))
  np.save(tmp_path / "x.npy", images.features)
  np.save(tmp_path / "y.npy", images.labels)
  pair = (str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
  mapped = data.npy(train=pair, validation=pair, test=pair, num_classes=1).train
  data.write_tfrecord(str(tmp_path / "records"), images)
  streamed = data.tfrecord(train_files=str(tmp_path / "records"), validation_files=str(tmp_path / "records"),
                           test_files=str(tmp_path / "records"), feature_shape=(4, 4, 1), num_classes=1)
  for split in (tiny_array_record.train, mapped):
    assert input_graph.may_hold_python(split)
    dataset = pipeline.train_dataset(split, global_batch_size=2, seed=0, start_step=0)
    with pytest.raises(ValueError, match=r"--strategy=tpu runs the input pipeline without Python.*the "
                       r"digits train split.*TFRecord files.*Trainer.data = @tfrecord"):
      input_graph.require_graph_only("digits train", dataset, "--strategy=tpu")
  for dataset in (pipeline.train_dataset(streamed.train, global_batch_size=2, seed=0, start_step=0),
                  pipeline.eval_dataset(streamed.validation, global_batch_size=2)):
    input_graph.require_graph_only("records", dataset, "--strategy=tpu")  # nothing raised
  assert not input_graph.may_hold_python(images)


def test_a_run_on_the_data_service_refuses_python_input_before_writing(tmp_path):
  """The builder's refusal, the one --strategy=tpu runs (no TPU here), reached through the service
  option: a memory-mapped .npy training split stops the run with InvalidRunError (exit status 2 from
  the command line) before the model directory is created."""
  features = np.zeros((64, 8, 8, 1), np.uint8)
  np.save(tmp_path / "x.npy", features)
  np.save(tmp_path / "y.npy", np.arange(64, dtype=np.int32) % 2)
  pair = [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
  model_dir = tmp_path / "run"
  with pytest.raises(trainer.InvalidRunError, match=r"the tf.data service \(DataService.dispatcher\) runs "
                     r"the input pipeline without Python.*npy train split.*@tfrecord"):
    trainer.train([QUICKSTART], ["Trainer.data=@npy", f"npy.train={pair}", f"npy.validation={pair}",
                                 f"npy.test={pair}", "npy.num_classes=2",
                                 "DataService.dispatcher='grpc://localhost:1'"],
                  model_dir=str(model_dir), verbose=False)
  assert not model_dir.exists()


# --- the tf.data service --------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


@pytest.fixture
def service_of():
  """`service_of(n)`: a dispatcher with n workers on localhost, in process; stopped after the test."""
  servers = []

  def start(workers: int) -> DataService:
    ports = [_free_port() for _ in range(workers)]
    dispatcher = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(
        worker_addresses=[f"localhost:{port}" for port in ports]))
    servers.append(dispatcher)
    for port in ports:
      servers.append(tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
          dispatcher_address=dispatcher.target.split("://")[1], worker_address=f"localhost:{port}",
          port=port)))
    return DataService(dispatcher=dispatcher.target)

  yield start
  for server in reversed(servers):
    server._stop()  # pylint: disable=protected-access  (no public stop; the servers die with the process)


def _streamed_jpegs(tmp_path):
  images = ArrayData(smooth_images(12, 20, 24, np.random.default_rng(3)), np.arange(12, dtype=np.int32))
  data.write_tfrecord(str(tmp_path / "shard"), images, image_format="jpeg", num_shards=3)
  pattern = str(tmp_path / "shard-*")
  return data.tfrecord(train_files=pattern, validation_files=pattern, test_files=pattern,
                       feature_shape=(None, None, 3), num_classes=12, shuffle_buffer=4).train


def _stream(split, service: DataService | None, start_step: int, count: int) -> list[bytes]:
  dataset = pipeline.train_dataset(split, global_batch_size=4, seed=2, start_step=start_step,
                                   preprocessing=ImagePreprocessing(**CROP),
                                   service_sharding=service is not None)
  if service is not None:
    dataset = service.distribute(dataset)
  return [features.numpy().tobytes() + labels.numpy().tobytes() for features, labels in dataset.take(count)]


@pytest.mark.slow
def test_one_service_worker_delivers_the_local_stream_exactly_and_resumes_exactly(tmp_path, service_of):
  split = _streamed_jpegs(tmp_path)
  service = service_of(1)
  local = _stream(split, None, 0, 8)  # 32 examples: more than two epochs of 12
  assert _stream(split, service, 0, 8) == local
  assert _stream(split, service, 5, 3) == local[5:]


@pytest.mark.slow
def test_two_service_workers_deliver_every_local_batch_once_in_some_order(tmp_path, service_of):
  split = _streamed_jpegs(tmp_path)
  service = service_of(2)
  local = _stream(split, None, 0, 16)
  served = _stream(split, service, 0, 8)
  assert len(set(served)) == 8 and set(served) <= set(local)
