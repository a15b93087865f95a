"""TFDS datasets by name, end to end: a small builder prepared here in both formats (TFRecord, streamed
from its shards; array_record, read by index), trained through a data config, resumed exactly, and a
fresh start that reads nothing of the training split beyond its first batch.

The builder (`tiny_shapes`) is a real `GeneratorBasedBuilder` written into a temporary data_dir in 4
shards per split; each 8x8x3 PNG image carries its example index in pixel [0, 0, 0]. What Occam reads
is checked against TFDS's own reader (`as_dataset`). TFDS does not import in the tfa lane: the module
is skipped there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

tensorflow_datasets = pytest.importorskip("tensorflow_datasets",
                                          reason="TensorFlow Datasets does not import in this lane")

from tests.helpers import REPO, assert_same_weights, model_weights, train_in_process  # noqa: E402
from trainer import data  # noqa: E402
from trainer.api import InvalidRunError  # noqa: E402
from trainer.config import parsing  # noqa: E402
from trainer.data import RecordData, fingerprint, pipeline  # noqa: E402
from trainer.data.sources import count_records  # noqa: E402
from trainer.loop import builder  # noqa: E402
from trainer.loop.settings import Trainer  # noqa: E402

TRAIN, TEST, SHARDS, SIDE = 48, 12, 4, 8
NAME = "tiny_shapes"

with tensorflow_datasets.core.registered.skip_registration():  # read from the prepared files alone

  class TinyShapes(tensorflow_datasets.core.GeneratorBasedBuilder):
    """48 train / 12 test random 8x8x3 PNG images, pixel [0, 0, 0] = the example's index; label i % 4."""

    VERSION = tensorflow_datasets.core.Version("1.0.0")

    def _info(self):
      features = tensorflow_datasets.features
      return tensorflow_datasets.core.DatasetInfo(builder=self, features=features.FeaturesDict({
          "image": features.Image(shape=(SIDE, SIDE, 3)), "label": features.ClassLabel(num_classes=4)}))

    def _split_generators(self, dl_manager):
      del dl_manager  # nothing to download
      return {"train": self._generate_examples(range(TRAIN)),
              "test": self._generate_examples(range(TRAIN, TRAIN + TEST))}

    def _generate_examples(self, indices):
      for index in indices:
        image = np.random.default_rng(index).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        image[0, 0, 0] = index
        yield index, {"image": image, "label": index % 4}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, str]:
  """data_dir of `tiny_shapes` prepared as each file format, 4 shards per split."""
  tensorflow_datasets.disable_progress_bar()
  data_dirs = {}
  for file_format in ("tfrecord", "array_record"):
    data_dirs[file_format] = str(tmp_path_factory.mktemp(file_format))
    TinyShapes(data_dir=data_dirs[file_format], file_format=file_format).download_and_prepare(
        download_config=tensorflow_datasets.download.DownloadConfig(num_shards=SHARDS))
  return data_dirs


def _splits(data_dir: str, **kwargs) -> data.Splits:
  return data.tfds(name=NAME, data_dir=data_dir, train_split="train[:40]", validation_split="train[40:]",
                   **kwargs)


def _tfds_indices(data_dir: str, split: str) -> list[int]:
  """The example indices of `split` in file order, read by TFDS's own reader (one file at a time)."""
  dataset = tensorflow_datasets.builder(NAME, data_dir=data_dir).as_dataset(
      split=split, shuffle_files=False, read_config=tensorflow_datasets.ReadConfig(interleave_cycle_length=1))
  return [int(example["image"][0, 0, 0]) for example in dataset]


def _indices(features: np.ndarray) -> list[int]:
  """The example indices of unaugmented images scaled to [0, 1]."""
  return np.rint(features[:, 0, 0, 0] * 255).astype(int).tolist()


def test_tfrecord_splits_stream_tfds_s_file_instructions(prepared):
  """A TFRecord-prepared dataset is streamed: each split is TFDS's shards for its slice, counted from
  the metadata; the first examples are TFDS's in file order; an epoch of the training stream holds
  each example of `train[:40]` once (and none of `train[40:]`), split between 2 workers by shard."""
  splits = _splits(prepared["tfrecord"])
  assert "streamed from its TFRecord shards" in splits.description
  assert all(isinstance(split, RecordData) for _, split in splits.named_splits())
  assert [split.known_size for _, split in splits.named_splits()] == [40, 8, 12]
  for name, split in (("train[40:]", splits.validation), ("test", splits.test)):
    features, labels = pipeline.first_examples(split, split.known_size)
    assert _indices(features) == _tfds_indices(prepared["tfrecord"], name)
    np.testing.assert_array_equal(labels, np.array(_indices(features)) % 4)
  train_indices = sorted(_tfds_indices(prepared["tfrecord"], "train[:40]"))
  epoch = pipeline.train_dataset(splits.train, global_batch_size=8, seed=3, start_step=0).take(5)
  assert sorted(index for features, _ in epoch for index in _indices(features.numpy())) == train_indices
  by_worker = []
  for worker in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                         num_replicas_in_sync=2)
    share = splits.train.records_in(splits.train.worker_files(worker, 2))
    stream = pipeline.train_dataset(splits.train, global_batch_size=8, seed=3, start_step=0,
                                    input_context=context).take(share // 4)
    by_worker.append([index for features, _ in stream for index in _indices(features.numpy())])
  assert not set(by_worker[0]) & set(by_worker[1])
  assert sorted(by_worker[0] + by_worker[1]) == train_indices


def test_a_resumed_stream_continues_the_uninterrupted_one(prepared):
  """From step 7 (two epochs of 5 steps in: the second, mid-epoch), the stream is the tail of the one
  started at 0, with each worker's records counted from the metadata (nothing is read to count)."""
  train = _splits(prepared["tfrecord"]).train
  full = [features.numpy() for features, _ in
          pipeline.train_dataset(train, global_batch_size=8, seed=1, start_step=0).take(12)]
  resumed = [features.numpy() for features, _ in
             pipeline.train_dataset(train, global_batch_size=8, seed=1, start_step=7).take(5)]
  for got, expected in zip(resumed, full[7:]):
    np.testing.assert_array_equal(got, expected)


DATA_CONFIG = f"""# tiny_shapes from a TFDS data_dir, 40 train / 8 validation carved from train / 12 test.
Trainer.data = @tfds
tfds.name = '{NAME}'
tfds.train_split = 'train[:40]'
tfds.validation_split = 'train[40:]'
tfds.test_split = 'test'
tfds.shuffle_buffer = 16
Trainer.preprocessing = @ImagePreprocessing()
ImagePreprocessing.train_crop = 'pad_and_crop'
ImagePreprocessing.padding = 2
ImagePreprocessing.flip = True
ImagePreprocessing.mean = (0.5, 0.5, 0.5)
ImagePreprocessing.std = (0.25, 0.25, 0.25)
"""
RUN = ["MLP.hidden_sizes=(16,)", "Trainer.batch_size=8", "Trainer.eval_batch_size=8",
       "Trainer.steps_per_loop=2", "Trainer.eval_every=4", "Trainer.checkpoint_every=2",
       "Monitor.train_eval_examples=8", "Monitor.sharpness_examples=8"]


def _config(tmp_path, data_dir: str) -> tuple[list[str], list[str]]:
  """(gin files, bindings) of a run on `data_dir` through a data config written like gin_configs/data/*."""
  path = tmp_path / f"{NAME}.gin"
  path.write_text(DATA_CONFIG)
  return [os.path.join(REPO, "gin_configs", "base.gin"), str(path)], [f"tfds.data_dir='{data_dir}'", *RUN]


@pytest.mark.slow
@pytest.mark.parametrize("file_format, kind", [("tfrecord", "records"), ("array_record", "indexed")])
def test_both_formats_train_through_a_data_config_resume_exactly_and_guard_the_data(
    prepared, tmp_path, file_format, kind):
  """Stopped at step 4 and resumed to 12 (past an epoch of 5 steps), a run ends with the weights of one
  that ran 12 steps straight; the data's fingerprint records the split, and (for streamed shards, which
  it records file by file) a resume after a shard changed is refused, naming the split and the file."""
  data_dir = str(tmp_path / "data")
  shutil.copytree(prepared[file_format], data_dir)
  gin_files, bindings = _config(tmp_path, data_dir)
  straight, metrics = train_in_process(str(tmp_path / "straight"), bindings + ["Trainer.train_steps=12"],
                                       gin_files=gin_files)
  train_in_process(str(tmp_path / "resumed"), bindings + ["Trainer.train_steps=4"], gin_files=gin_files)
  resumed, _ = train_in_process(str(tmp_path / "resumed"), bindings + ["Trainer.train_steps=12"],
                                gin_files=gin_files)
  assert int(resumed.step.numpy()) == 12 and 0 <= metrics["test/accuracy"] <= 1
  assert_same_weights(model_weights(resumed), model_weights(straight))
  with open(tmp_path / "resumed" / fingerprint.FINGERPRINT_FILE) as file:
    recorded = json.load(file)["splits"]["train"]
  assert recorded["kind"] == kind and recorded["examples"] == 40
  if kind != "records":
    return
  assert sum(entry["records"] for entry in recorded["files"].values()) == 40  # what the slice takes
  assert all(entry["bytes"] == os.path.getsize(path) for path, entry in recorded["files"].items())
  changed = resumed.splits.train.files[0]
  with open(changed, "ab") as file:
    file.write(b"\0")
  with pytest.raises(InvalidRunError, match=rf"train: {changed}: bytes \d+, was \d+"):
    train_in_process(str(tmp_path / "resumed"), bindings + ["Trainer.train_steps=14"], gin_files=gin_files)


def _damage_after(path: str, keep: int) -> None:
  """Overwrites every byte of `path` after its first `keep` records with 0xff (the size stays): a read
  past them, or a count, fails."""
  offset = sum(16 + len(record) for record in tf.data.TFRecordDataset(path).take(keep).as_numpy_iterator())
  with open(path, "r+b") as file:
    file.seek(offset)
    file.write(b"\xff" * (os.path.getsize(path) - offset))


def test_a_fresh_build_reads_only_the_first_batch_of_the_streamed_train_split(prepared, tmp_path):
  """Start-up must not grow with the training split: on a copy whose train shards are damaged past the
  first shard's first 8 records (the Monitor's probe batch), `build` succeeds with the split's size
  from TFDS's metadata, so it neither counted the split nor opened the other shards (a count, which
  reads every record, fails on the same files)."""
  data_dir = str(tmp_path / "copy")
  shutil.copytree(prepared["tfrecord"], data_dir)
  train = _splits(data_dir).train
  for number, path in enumerate(train.files):
    _damage_after(path, 8 if number == 0 else 0)
  gin_files, bindings = _config(tmp_path, data_dir)
  parsing.parse(gin_files, bindings + ["Trainer.train_steps=2"])
  run = builder.build(Trainer(), strategy=tf.distribute.get_strategy(), model_dir=str(tmp_path / "run"))
  assert run.splits.train.known_size == 40 and len(run.splits.train.files) == SHARDS
  with pytest.raises(tf.errors.DataLossError):
    count_records(run.splits.train.files)


def test_a_fresh_tfrecord_build_opens_only_the_first_train_shard(tmp_path):
  """The `tfrecord` loader checks the first record of the first training file only: every other
  training file here is not even a TFRecord file, and opening the split (and its first examples)
  still succeeds without counting it. Evaluation splits are checked file by file and counted."""
  images = data.ArrayData(np.zeros((12, SIDE, SIDE, 3), np.uint8), (np.arange(12) % 4).astype(np.int32))
  shards = data.write_tfrecord(str(tmp_path / "train"), images, num_shards=3)
  for path in shards[1:]:
    with open(path, "r+b") as file:
      file.write(b"\xff" * os.path.getsize(path))
  evaluation = data.write_tfrecord(str(tmp_path / "eval"), images)[0]
  opened = data.tfrecord(train_files=str(tmp_path / "train-*"), validation_files=evaluation,
                         test_files=evaluation, feature_shape=(SIDE, SIDE, 3), num_classes=4)
  assert opened.train.known_size is None and opened.validation.known_size == 12
  assert len(pipeline.first_examples(opened.train, 4)[0]) == 4
  with pytest.raises(ValueError, match=r"train-00001-of-00003: not a TFRecord file"):
    data.tfrecord(train_files=evaluation, validation_files=str(tmp_path / "train-*"), test_files=evaluation,
                  feature_shape=(SIDE, SIDE, 3), num_classes=4)


def test_data_dirs_on_other_filesystems(prepared):
  """gs:// data_dirs go through tf.io.gfile (TFDS's path library picks TensorFlow's filesystem when
  TensorFlow is installed). TensorFlow's in-memory ram:// filesystem cannot stand in: TFDS refuses the
  scheme, with a message naming tfds.data_dir. What Occam reads itself, the shards, works there: the
  streamed split with its shards copied to ram:// yields what it yields from local files."""
  local = _splits(prepared["tfrecord"])
  for path in (*local.train.files, *local.test.files):
    tf.io.gfile.makedirs(os.path.dirname("ram://tfds" + path))
    tf.io.gfile.copy(path, "ram://tfds" + path, overwrite=True)
  with pytest.raises(ValueError, match=r"tfds.data_dir='ram://tfds.*': TFDS cannot open paths of this "
                                       r"filesystem .*not 'ram://'"):
    data.tfds(name=NAME, data_dir="ram://tfds" + prepared["tfrecord"])
  for split in (local.train, local.test):
    in_memory = dataclasses.replace(split, files=tuple("ram://tfds" + path for path in split.files))
    got, expected = (pipeline.train_dataset(each, global_batch_size=8, seed=2, start_step=3).take(3)
                     for each in (in_memory, split))
    for (features, labels), (expected_features, expected_labels) in zip(got, expected):
      np.testing.assert_array_equal(features, expected_features)
      np.testing.assert_array_equal(labels, expected_labels)


@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_both_formats_hand_preprocessing_the_encoded_image(prepared, file_format):
  """A random-resized crop decodes only its window, so each format's training split also parses a
  record with its image left encoded (`parse_encoded`): the PNG bytes decode to `parse`'s pixels."""
  train = _splits(prepared[file_format]).train
  if file_format == "tfrecord":
    serialized = next(iter(train.records(train.files[:1])))
  else:
    serialized = tf.constant(train.read_records(np.array([0]))[0])
  pixels, label = train.parse(serialized)
  encoded, encoded_label = train.parse_encoded(serialized)
  assert encoded.dtype == tf.string and encoded.shape == ()
  np.testing.assert_array_equal(tf.io.decode_png(encoded, channels=3), pixels)
  assert int(encoded_label) == int(label)
