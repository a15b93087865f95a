"""Splits read by index or streamed, uint8 images and seeded augmentation (trainer.data.pipeline).

The data are tiny uint8 images whose first pixel encodes the example's index, written by the tests
as memory-mapped .npy arrays and as TFRecord shards (raw and PNG-encoded); TFDS datasets by name
come from `tfds.testing.mock_data`. Order, augmentation and resume are checked against what the
documented rules say, computed independently in numpy.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tests.conftest import mirrored
from tests.helpers import REPO, assert_same_weights, checkpoint_values, model_weights, train_in_process
from trainer import data
from trainer.data import ArrayData, ImagePreprocessing, pipeline, preprocessing

NUM_EXAMPLES = 40
SIDE = 8


def _images(count: int = NUM_EXAMPLES) -> ArrayData:
  """uint8 (count, 8, 8, 3) images: pixel [0, 0, 0] = index, the rest a per-example pattern; label i % 5."""
  rng = np.random.default_rng(0)
  features = rng.integers(0, 256, size=(count, SIDE, SIDE, 3), dtype=np.uint8)
  features[:, 0, 0, 0] = np.arange(count)
  return ArrayData(features=features, labels=(np.arange(count) % 5).astype(np.int32))


def _index_of(images: np.ndarray) -> np.ndarray:
  """The example index encoded in float images scaled to [0, 1] (unaugmented)."""
  return np.rint(images[:, 0, 0, 0] * 255).astype(int)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
  """The same images as memory-mapped .npy files and as 4 raw TFRecord shards."""
  root = tmp_path_factory.mktemp("stored")
  images = _images()
  np.save(root / "x.npy", images.features)
  np.save(root / "y.npy", images.labels)
  pair = (str(root / "x.npy"), str(root / "y.npy"))
  mapped = data.npy(train=pair, validation=pair, test=pair, num_classes=5)
  data.write_tfrecord(str(root / "train"), images, num_shards=4)
  streamed = data.tfrecord(train_files=str(root / "train-*"), validation_files=str(root / "train-*"),
                           test_files=str(root / "train-*"), feature_shape=(SIDE, SIDE, 3), num_classes=5,
                           shuffle_buffer=8)
  return images, mapped, streamed


def _batches(dataset: tf.data.Dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
  return [(features.numpy(), labels.numpy()) for features, labels in dataset.take(count)]


AUGMENTED = dict(train_crop="pad_and_crop", padding=2, flip=True)


def test_memory_mapped_uint8_reads_the_same_stream_as_float_arrays_in_ram(stored):
  images, mapped, _ = stored
  assert mapped.train.memory_mapped and mapped.train.features_dtype == np.uint8
  as_float = ArrayData(images.features.astype(np.float32) / 255, images.labels)
  for (mapped_x, mapped_y), (float_x, float_y) in zip(
      _batches(pipeline.train_dataset(mapped.train, global_batch_size=16, seed=3, start_step=0), 6),
      _batches(pipeline.train_dataset(as_float, global_batch_size=16, seed=3, start_step=0), 6)):
    np.testing.assert_allclose(mapped_x, float_x, rtol=1e-6)  # uint8 / 255 on the fly
    np.testing.assert_array_equal(mapped_y, float_y)


@pytest.mark.parametrize("kind", ["mapped", "streamed"])
def test_resumed_stream_equals_the_uninterrupted_one_with_augmentation(stored, kind):
  """Starting at step k gives batches k, k+1, ... of the stream started at 0, across epoch ends."""
  split = {"mapped": stored[1], "streamed": stored[2]}[kind].train
  preprocessing = ImagePreprocessing(**AUGMENTED)

  def stream(start_step):
    return pipeline.train_dataset(split, global_batch_size=16, seed=5, start_step=start_step,
                                  preprocessing=preprocessing)

  full = _batches(stream(0), 9)  # 144 examples: 3.6 epochs of 40
  for start in (1, 5):
    for (x, y), (expected_x, expected_y) in zip(_batches(stream(start), 9 - start), full[start:]):
      np.testing.assert_array_equal(x, expected_x)
      np.testing.assert_array_equal(y, expected_y)


def test_a_fresh_stream_reads_no_counts_and_a_resumed_one_counts_its_worker_files(stored):
  """Training from step 0 never counts records (start-up does not grow with N); evaluation splits
  are counted when opened; resuming counts only the resuming worker's files."""
  _, _, streamed = stored
  train = data.RecordData(files=streamed.train.files, file_counts=None, parse=streamed.train.parse,
                          example_shape=(SIDE, SIDE, 3), features_dtype=np.uint8)
  assert streamed.validation.known_size == NUM_EXAMPLES
  next(iter(pipeline.train_dataset(train, global_batch_size=8, seed=0, start_step=0)))
  first_features, _ = pipeline.first_examples(train, 4)  # the Monitor's probe batch, read at start-up
  assert train.known_size is None and len(first_features) == 4
  context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
  next(iter(pipeline.train_dataset(train, global_batch_size=8, seed=0, start_step=3, input_context=context)))
  assert train.known_size is None  # only worker 1's two files were counted
  assert train.num_examples == NUM_EXAMPLES and train.known_size == NUM_EXAMPLES


def test_streamed_epochs_cover_every_record_once_in_a_new_order(stored):
  images, _, streamed = stored
  stream = pipeline.train_dataset(streamed.train, global_batch_size=8, seed=1, start_step=0)
  labels_by_epoch, firsts = [], []
  batches = _batches(stream, 3 * NUM_EXAMPLES // 8)
  for epoch in range(3):
    features = np.concatenate([x for x, _ in batches[epoch * 5:(epoch + 1) * 5]])
    index = _index_of(features)
    assert sorted(index) == list(range(NUM_EXAMPLES))  # each record exactly once per epoch
    labels_by_epoch.append(np.concatenate([y for _, y in batches[epoch * 5:(epoch + 1) * 5]]))
    np.testing.assert_array_equal(labels_by_epoch[-1], images.labels[index])
    firsts.append(tuple(index[:10]))
  assert len(set(firsts)) == 3  # a new order every epoch


def test_each_worker_streams_its_own_files(stored):
  """With 2 workers, each reads 2 of the 4 shards: disjoint halves of the data, all of it together."""
  _, _, streamed = stored
  seen = []
  for worker in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                         num_replicas_in_sync=2)
    stream = pipeline.train_dataset(streamed.train, global_batch_size=8, seed=1, start_step=0,
                                    input_context=context)
    seen.append(set(_index_of(np.concatenate([x for x, _ in _batches(stream, 5)]))))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_EXAMPLES))
  assert seen[0] == {i for i in range(NUM_EXAMPLES) if i % 4 in (0, 2)}  # shards 0 and 2 (round-robin)


@pytest.mark.parametrize("replicas", [2, 4])
def test_augmented_random_access_batches_are_replica_invariant(stored, replicas):
  """The replicas' slices of a step, put together, are the one-replica batch, augmentation included."""
  _, mapped, _ = stored
  preprocessing = ImagePreprocessing(**AUGMENTED)
  single = _batches(pipeline.train_dataset(mapped.train, global_batch_size=16, seed=2, start_step=3,
                                           preprocessing=preprocessing), 2)
  parts = []
  for replica in range(replicas):  # one input pipeline per replica: the multi-worker layout
    context = tf.distribute.InputContext(num_input_pipelines=replicas, input_pipeline_id=replica,
                                         num_replicas_in_sync=replicas)
    parts.append(_batches(pipeline.train_dataset(mapped.train, global_batch_size=16, seed=2, start_step=3,
                                                 input_context=context, preprocessing=preprocessing), 2))
  for step in range(2):
    np.testing.assert_array_equal(np.concatenate([part[step][0] for part in parts]), single[step][0])


def test_pad_and_crop_and_flip_match_their_definition():
  """Each augmented image is a window of the zero-padded image, maybe mirrored; both happen."""
  images = _images(64)
  preprocessing = ImagePreprocessing(**AUGMENTED)
  batch = _batches(pipeline.train_dataset(images, global_batch_size=64, seed=0, start_step=0,
                                          preprocessing=preprocessing), 1)[0][0]
  order = pipeline._epoch_permutation(64, 0, tf.constant(0, tf.int64)).numpy()
  flips, shifts = 0, set()
  for augmented, index in zip(batch, order):
    padded = np.pad(images.features[index].astype(np.float32) / 255, ((2, 2), (2, 2), (0, 0)))
    windows = {(top, left, flipped): (padded[top:top + SIDE, left:left + SIDE][:, ::-1] if flipped
                                      else padded[top:top + SIDE, left:left + SIDE])
               for top in range(5) for left in range(5) for flipped in (False, True)}
    matches = [key for key, window in windows.items() if np.allclose(window, augmented, atol=1e-6)]
    assert matches, f"example {index} is no window of its padded image"
    flips += matches[0][2]
    shifts.add(matches[0][:2])
  assert 16 < flips < 48 and len(shifts) > 10  # p = 1/2 flips (binomial 64, +-4 sd); many offsets


def test_center_crop_and_normalization_match_numpy():
  images = _images(4)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  preprocessing = ImagePreprocessing(eval_crop="center", crop_fraction=0.5, mean=mean, std=std)
  features, _ = pipeline.first_examples(images, 4, preprocessing)
  expected = (images.features[:, 2:6, 2:6].astype(np.float32) / 255 - mean) / std  # central 4 of 8
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler", ["inception", "torchvision"])
def test_random_resized_crop_gives_the_size_and_stays_inside_the_image(sampler):
  images = _images(8)
  augmentation = ImagePreprocessing(image_size=5, train_crop="random_resized", area_range=(0.25, 1.0),
                                    crop_sampler=sampler)
  batches = [_batches(pipeline.train_dataset(images, global_batch_size=8, seed=0, start_step=0,
                                             preprocessing=augmentation), 1)[0][0] for _ in range(2)]
  assert batches[0].shape == (8, 5, 5, 3) and batches[0].min() >= 0 and batches[0].max() <= 1
  np.testing.assert_array_equal(*batches)  # stateless per example: the same crops again
  with pytest.raises(ValueError, match="ImagePreprocessing.crop_sampler='timm' is not one of"):
    ImagePreprocessing(crop_sampler="timm")


def _torchvision_get_params(rng: np.random.Generator, height: int, width: int, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """torchvision's `RandomResizedCrop.get_params` (top, left, height, width), written out with numpy's
  generator: 10 tries of area ~ U(scale) and log aspect ~ U(log ratio), the first that fits placed
  uniformly, else the central crop clamped to the ratio range."""
  area = height * width
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return _torchvision_center_crop(height, width, ratio)


def _torchvision_center_crop(height: int, width: int, ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """`get_params`' fallback: the whole image, clamped to the aspect ratio range, centred."""
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("height, width", [(300, 400), (50, 400)], ids=["300x400", "50x400-mostly-fallback"])
def test_torchvision_crop_sampler_follows_torchvision_s_distribution(height, width):
  """3,000 windows of `crop_sampler='torchvision'` (one per example seed) against 3,000 of torchvision's
  `get_params` written in numpy: area fraction, log aspect ratio and relative offsets agree in
  distribution (two-sample Kolmogorov-Smirnov, p > 0.001; both samples are fixed by their seeds), the
  center-crop fallback's rate within 4 standard deviations and its window exact. On a 300x400 image
  the mean area fraction is 0.43 (TensorFlow's Inception sampler: 0.37, docs/REGULARIZATION.md)."""
  count, shape = 3000, tf.constant([height, width, 3])

  @tf.function(autograph=False)  # plain map_fn; TF 2.15's AutoGraph trips over these test closures
  def windows():
    def one(position):
      begin, size = preprocessing.torchvision_window(shape, preprocessing.example_seed(0, position),
                                                     (0.08, 1.0), (3 / 4, 4 / 3))
      return tf.concat([begin[:2], size[:2]], 0)
    return tf.map_fn(one, tf.range(count, dtype=tf.int64), fn_output_signature=tf.int32)

  got = windows().numpy()
  rng = np.random.default_rng(0)
  expected = np.array([_torchvision_get_params(rng, height, width) for _ in range(count)])

  def statistics(w):  # area fraction, log aspect, top offset fraction, left offset fraction
    top, left, h, w_ = w.T
    return (h * w_ / (height * width), np.log(w_ / h), top / np.maximum(height - h, 1),
            left / np.maximum(width - w_, 1))

  for got_statistic, expected_statistic in zip(statistics(got), statistics(expected)):
    assert scipy.stats.ks_2samp(got_statistic, expected_statistic).pvalue > 1e-3
  assert (got[:, :2] >= 0).all() and (got[:, 2:] > 0).all()
  assert ((got[:, 0] + got[:, 2] <= height) & (got[:, 1] + got[:, 3] <= width)).all()
  fallback = np.array(_torchvision_center_crop(height, width))
  rate = (expected == fallback).all(axis=1).mean()
  got_rate = (got == fallback).all(axis=1).mean()
  assert abs(got_rate - rate) <= 4 * np.sqrt(2 * max(rate * (1 - rate), 1 / count) / count)
  if (height, width) == (300, 400):
    assert statistics(got)[0].mean() == pytest.approx(0.43, abs=0.01)
  else:
    assert rate > 0.3


def test_png_shards_decode_to_the_written_pixels(tmp_path):
  images = _images(6)
  data.write_tfrecord(str(tmp_path / "png"), images, image_format="png", num_shards=2)
  pattern = str(tmp_path / "png-*")
  splits = data.tfrecord(train_files=pattern, validation_files=pattern, test_files=pattern,
                         feature_shape=(None, None, 3), num_classes=5)
  preprocessing = ImagePreprocessing(image_size=SIDE)  # sizes may vary: the loader needs a size
  features, labels = pipeline.first_examples(splits.test, 6, preprocessing)
  order = [0, 2, 4, 1, 3, 5]  # shard 0 then shard 1, each in written order (round-robin dealing)
  np.testing.assert_allclose(features, images.features[order].astype(np.float32) / 255, atol=1e-6)
  np.testing.assert_array_equal(labels, images.labels[order])


def test_images_of_varying_size_need_an_image_size():
  with pytest.raises(ValueError, match="varying size .* ImagePreprocessing.image_size"):
    ImagePreprocessing().output_shape((None, None, 3))
  assert ImagePreprocessing(image_size=224).output_shape((None, None, 3)) == (224, 224, 3)
  with pytest.raises(ValueError, match=r"per-example shape \[64\]"):
    ImagePreprocessing(flip=True).output_shape((64,))


def test_bad_stored_data_is_named(tmp_path):
  images = _images(4)
  np.save(tmp_path / "x64.npy", images.features.astype(np.float64))
  np.save(tmp_path / "x.npy", images.features)
  np.save(tmp_path / "y.npy", images.labels)
  pair = (str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
  wide = (str(tmp_path / "x64.npy"), pair[1])
  with pytest.raises(ValueError, match=r"npy.test .*x64.npy.*float32 or uint8"):
    data.npy(train=pair, validation=pair, test=wide, num_classes=5)
  with pytest.raises(FileNotFoundError, match=r"npy.validation: no file '.*missing.npy'"):
    data.npy(train=pair, validation=(str(tmp_path / "missing.npy"), pair[1]), test=pair, num_classes=5)
  data.write_tfrecord(str(tmp_path / "small"), images)
  with pytest.raises(ValueError, match=r"small: record 0: 'features' is neither 48 raw bytes nor a PNG"):
    data.tfrecord(train_files=str(tmp_path / "small"), validation_files=str(tmp_path / "small"),
                  test_files=str(tmp_path / "small"), feature_shape=(4, 4, 3), num_classes=5)
  with pytest.raises(ValueError, match="2 training file.* cannot be shared by 4 workers"):
    data.RecordData(files=("a", "b"), file_counts=(1, 1), parse=None, example_shape=(1,),
                    features_dtype=np.float32).worker_files(0, 4)


@pytest.mark.slow
@pytest.mark.parametrize("dataset, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)),
                                            ("cifar100", (32, 32, 3)), ("imagenet2012", (24, 24, 3))])
def test_shipped_data_configs_train_on_mock_tfds(tmp_path, dataset, shape):
  """Each shipped data config trains and evaluates through the real API on TFDS's mock data.

  Mock ImageNet images have random sizes, so this also covers decoding varying sizes, the random
  resized crop and the center crop (at 24 px instead of 224 to stay cheap).
  """
  pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
  import trainer
  from trainer.data import mock

  # --mock_data's shrunk run (batch 8), a little longer, with a small MLP.
  bindings = ["MLP.hidden_sizes=(16,)", "Trainer.train_steps=4", "Trainer.steps_per_loop=2",
              "Trainer.eval_every=4"]
  if dataset == "imagenet2012":
    bindings.append("ImagePreprocessing.image_size=24")
  with mock.mock_tfds(num_examples=24) as mocked:
    results = trainer.train([os.path.join(REPO, "gin_configs", "base.gin"),
                             os.path.join(REPO, "gin_configs", "data", f"{dataset}.gin")],
                            [*mocked, *bindings], model_dir=str(tmp_path / "run"), verbose=False)
  assert results.step == 4 and 0 <= results.metrics["test/accuracy"] <= 1
  classes = {"mnist": 10, "cifar10": 10, "cifar100": 100, "imagenet2012": 1000}[dataset]
  kernels = {value.shape for value in checkpoint_values(str(tmp_path / "run")).values() if value.ndim == 2}
  # The MLP took its input size and class count from the data (no binding says them).
  assert (int(np.prod(shape)), 16) in kernels and (16, classes) in kernels


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["npy", "tfrecord"])
def test_training_resumed_on_augmented_data_ends_bit_identical(tmp_path, kind):
  """Stopped at step 4 (a third into the second epoch) and resumed to 12, a run on augmented images
  read by index (npy) or streamed (TFRecord shards) ends with the same weights as one that ran 12
  steps straight; read by index, 2 replicas agree with one (the 1/2/4-replica and 2-worker
  agreement of the data itself is checked on the pipeline above)."""
  images = _images(48)
  if kind == "npy":
    np.save(tmp_path / "x.npy", images.features)
    np.save(tmp_path / "y.npy", images.labels)
    pair = [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    data_bindings = ["Trainer.data=@npy", f"npy.train={pair}", f"npy.validation={pair}", f"npy.test={pair}",
                     "npy.num_classes=5"]
  else:
    data.write_tfrecord(str(tmp_path / "shard"), images, num_shards=3)
    pattern = str(tmp_path / "shard-*")
    data_bindings = ["Trainer.data=@tfrecord", f"tfrecord.train_files='{pattern}'",
                     f"tfrecord.validation_files='{pattern}'", f"tfrecord.test_files='{pattern}'",
                     f"tfrecord.feature_shape={(SIDE, SIDE, 3)}", "tfrecord.num_classes=5",
                     "tfrecord.shuffle_buffer=16"]
  bindings = data_bindings + [
      "MLP.hidden_sizes=(16,)",
      "Trainer.preprocessing=@ImagePreprocessing()", "ImagePreprocessing.train_crop='pad_and_crop'",
      "ImagePreprocessing.padding=2", "ImagePreprocessing.flip=True", "Trainer.batch_size=16",
      "Trainer.eval_batch_size=16", "Trainer.steps_per_loop=2", "Trainer.eval_every=4",
      "Trainer.checkpoint_every=2", "Monitor.train_eval_examples=16", "Monitor.sharpness_examples=16"]
  base = [os.path.join(REPO, "gin_configs", "base.gin")]
  straight, _ = train_in_process(str(tmp_path / "straight"), bindings + ["Trainer.train_steps=12"],
                                 gin_files=base)
  train_in_process(str(tmp_path / "resumed"), bindings + ["Trainer.train_steps=4"], gin_files=base)
  resumed, _ = train_in_process(str(tmp_path / "resumed"), bindings + ["Trainer.train_steps=12"],
                                gin_files=base)
  assert int(resumed.step.numpy()) == 12
  assert_same_weights(model_weights(resumed), model_weights(straight))
  if kind == "tfrecord":  # a fresh run, built, trained and evaluated, never counted its training records
    assert straight.splits.train.known_size is None
  if kind == "npy":  # read by index: 2 replicas (each augmenting its own half) train the same model
    replicated, _ = train_in_process(str(tmp_path / "replicated"), bindings + ["Trainer.train_steps=12"],
                                     gin_files=base, strategy=mirrored(2))
    assert_same_weights(model_weights(replicated), model_weights(straight), atol=1e-5)


def _timm_erasing_box(rng: np.random.Generator, height: int, width: int,
                      probability: float) -> tuple[int, int, int, int]:
  """timm's `RandomErasing(probability, mode='pixel')` box (top, left, h, w), written out with numpy's
  generator; (0, 0, 0, 0) when nothing is erased."""
  if rng.random() > probability:
    return 0, 0, 0, 0
  for _ in range(10):
    target_area = rng.uniform(0.02, 1 / 3) * height * width
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
    h, w = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
    if w < width and h < height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return 0, 0, 0, 0


def test_random_erasing_follows_timm_s_random_erasing():
  """3,000 training images of a constant 0.5 through `random_erasing=0.25`, against 3,000 boxes of timm's
  sampler in numpy: the erased share within 4 standard deviations of timm's, the erased boxes' area
  fraction, log aspect and relative offsets equal in distribution (two-sample Kolmogorov-Smirnov,
  p > 0.001, fixed seeds), and the erased pixels normalize to N(0, 1) (KS against the normal CDF on
  5,000 values, p > 0.001). Erasing is a pure function of the example's seed."""
  count, height, width = 3000, 24, 32
  mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
  augmentation = ImagePreprocessing(random_erasing=0.25, mean=mean, std=std)
  image = tf.fill([height, width, 3], tf.constant(0.5))

  @tf.function(autograph=False)  # plain map_fn; TF 2.15's AutoGraph trips over these test closures
  def erased():
    return tf.map_fn(lambda position: augmentation.example(image, preprocessing.example_seed(0, position)),
                     tf.range(count, dtype=tf.int64), fn_output_signature=tf.float32)

  images = erased().numpy()
  changed = (images != 0.5).any(axis=-1)
  rows, columns = changed.any(axis=2), changed.any(axis=1)
  got = np.array([(r.argmax(), c.argmax(), r.sum(), c.sum()) if r.any() else (0, 0, 0, 0)
                  for r, c in zip(rows, columns)])
  assert (changed.sum(axis=(1, 2)) == got[:, 2] * got[:, 3]).all()  # each change is one full box
  rng = np.random.default_rng(0)
  expected = np.array([_timm_erasing_box(rng, height, width, 0.25) for _ in range(count)])
  rate = (expected[:, 2] > 0).mean()
  assert abs((got[:, 2] > 0).mean() - rate) <= 4 * np.sqrt(2 * rate * (1 - rate) / count)

  def statistics(boxes):
    top, left, h, w = boxes[boxes[:, 2] > 0].T
    return (h * w / (height * width), np.log(h / w), top / np.maximum(height - h, 1),
            left / np.maximum(width - w, 1))

  for got_statistic, expected_statistic in zip(statistics(got), statistics(expected)):
    assert scipy.stats.ks_2samp(got_statistic, expected_statistic).pvalue > 1e-3
  noise = ((images - np.array(mean)) / np.array(std))[changed][:5000 // 3].ravel()
  assert scipy.stats.kstest(noise, "norm").pvalue > 1e-3
  again = augmentation.example(image, preprocessing.example_seed(0, tf.constant(7, tf.int64))).numpy()
  np.testing.assert_array_equal(again, images[7])
  with pytest.raises(ValueError, match="ImagePreprocessing.random_erasing must be a probability"):
    ImagePreprocessing(random_erasing=1.5)


DEIT_AUGMENTED = dict(AUGMENTED, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25,
                      repeated_augmentation=3)


def test_repeated_augmentation_reads_each_drawn_example_three_times_in_a_row(stored):
  """Each epoch of 40 reads the first 14 examples of the epoch's permutation (that of the stream without
  repeats) 3 times each in a row, cut at 40; the copies are augmented differently (their positions
  differ); DeiT's augmentation (crop, flip, RandAugment, erasing, repeats) resumes exactly and is
  replica-invariant."""
  _, mapped, streamed = stored

  def stream(start_step=0, input_context=None, **augmentation):
    augmentation = ImagePreprocessing(**augmentation)
    return pipeline.train_dataset(mapped.train, global_batch_size=8, seed=4, start_step=start_step,
                                  input_context=input_context, preprocessing=augmentation)

  plain = np.concatenate([_index_of(x) for x, _ in _batches(stream(), 10)])  # 2 epochs
  repeated = np.concatenate([_index_of(x) for x, _ in _batches(stream(repeated_augmentation=3), 10)])
  expected = np.concatenate([np.repeat(plain[epoch * 40:epoch * 40 + 14], 3)[:40] for epoch in (0, 1)])
  np.testing.assert_array_equal(repeated, expected)
  augmented = np.concatenate([x for x, _ in _batches(stream(**DEIT_AUGMENTED), 5)])
  triples = augmented[:39].reshape(13, 3, -1)
  assert all(not np.array_equal(t[0], t[1]) or not np.array_equal(t[1], t[2]) for t in triples)
  full = _batches(stream(**DEIT_AUGMENTED), 8)
  for (x, _), (expected_x, _) in zip(_batches(stream(3, **DEIT_AUGMENTED), 5), full[3:]):
    np.testing.assert_array_equal(x, expected_x)
  halves = [_batches(stream(3, tf.distribute.InputContext(2, replica, 2), **DEIT_AUGMENTED), 2)
            for replica in range(2)]
  for step in range(2):
    np.testing.assert_array_equal(np.concatenate([half[step][0] for half in halves]), full[3 + step][0])
  with pytest.raises(ValueError, match="repeated_augmentation needs a split read by index"):
    pipeline.train_dataset(streamed.train, global_batch_size=8, seed=4, start_step=0,
                           preprocessing=ImagePreprocessing(repeated_augmentation=3))


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_streamed_evaluation_reads_only_each_workers_share_and_covers_every_record_once(stored, tmp_path,
                                                                                         workers):
  """With W workers each evaluates its own files (or, with fewer files than workers, every W-th record),
  padded to the same number of batches; the union of the weighted examples is the split, once each.

  The other workers' files are overwritten with garbage before a worker reads: had it opened them,
  TensorFlow's TFRecord reader would fail on their framing.
  """
  _, _, streamed = stored
  counts = streamed.validation.file_counts or tuple(streamed.validation.records_in((f,))
                                                    for f in streamed.validation.files)
  seen, steps = [], set()
  for worker in range(workers):
    files = []
    for index, path in enumerate(streamed.validation.files):
      copy = str(tmp_path / f"w{worker}-{index}")
      mine = workers > len(streamed.validation.files) or index % workers == worker
      with open(path, "rb") as source, open(copy, "wb") as target:
        target.write(source.read() if mine else b"garbage, not a TFRecord")
      files.append(copy)
    split = data.RecordData(files=tuple(files), file_counts=counts, parse=streamed.validation.parse,
                            example_shape=(SIDE, SIDE, 3), features_dtype=np.uint8)
    context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=worker,
                                         num_replicas_in_sync=2 * workers)
    batches = list(pipeline.eval_dataset(split, global_batch_size=6, input_context=context))
    steps.add(len(batches))
    for features, _, weights in batches:
      assert features.shape[0] == -(-6 // (2 * workers))  # 6 rounded up to a multiple of the replicas
      seen += _index_of(features.numpy()[weights.numpy() == 1.0]).tolist()
  assert len(steps) == 1  # every worker runs as many evaluation steps
  assert sorted(seen) == list(range(NUM_EXAMPLES))
