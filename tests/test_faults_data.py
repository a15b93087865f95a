"""Input/data faults: data that change under a run, bad records deep in a stream (trainer.data.fingerprint,
.diagnosis), a data factory that resets the global random state.

Real files throughout: the bundled digits written as TFRecord shards and `.npy` arrays, damaged the
way data get damaged (a shard deleted or added, an array replaced by a larger one, a record with a
wrong key, shape, dtype or class id, a corrupted or truncated file), and the real CLI code path.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import gin
import numpy as np
import pytest
import tensorflow as tf

import trainer
from tests import helpers
from tests.helpers import QUICKSTART
from trainer import data, main
from trainer.config import parsing
from trainer.data import diagnosis, digits, fingerprint, pipeline
from trainer.loop import builder
from trainer.loop.settings import Trainer
from trainer.runtime import checkpointing

BAD = 25  # the damaged record of shard 1: past the examples read at start (Monitor: 16 from shard 0)
SMALL = ["Trainer.batch_size=8", "Trainer.eval_batch_size=64", "Trainer.steps_per_loop=5",
         "Trainer.eval_every=5", "Trainer.checkpoint_every=5", "MLP.hidden_sizes=(8,)",
         "Monitor.train_eval_examples=16", "Monitor.sharpness_examples=16"]


def _cli(model_dir, bindings, capsys, *flags) -> tuple[int, str]:
  """The CLI's code path in this process: (exit status, what it printed to stderr)."""
  code = helpers.run_main([f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}", *flags,
                           *(f"--gin_bindings={binding}" for binding in bindings)])
  return code, capsys.readouterr().err


@pytest.fixture
def shards(tmp_path):
  """The digits as 4 train shards and one validation and one test file; (directory, gin bindings)."""
  digits = data.digits()
  root = tmp_path / "data"
  root.mkdir()
  data.write_tfrecord(str(root / "train"), digits.train, num_shards=4)
  data.write_tfrecord(str(root / "validation"), digits.validation)
  data.write_tfrecord(str(root / "test"), digits.test)
  bindings = ["Trainer.data=@tfrecord", f"tfrecord.train_files='{root / 'train-*'}'",
              f"tfrecord.validation_files='{root / 'validation'}'", f"tfrecord.test_files='{root / 'test'}'",
              "tfrecord.feature_shape=(64,)", "tfrecord.num_classes=10", "tfrecord.shuffle_buffer=16"]
  return root, bindings + SMALL


def _rewrite_record(path: str, index: int, change) -> None:
  """Rewrites TFRecord file `path` with `change(example)` applied to its record `index`."""
  records = [record.numpy() for record in tf.data.TFRecordDataset(path)]
  example = tf.train.Example.FromString(records[index])
  change(example.features.feature)
  records[index] = example.SerializeToString()
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


# --- Resume on changed data -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_shard_deleted_or_added_before_a_resume_is_refused_naming_split_and_file(shards, tmp_path, capsys):
  root, bindings = shards
  run = tmp_path / "run"
  assert _cli(run, bindings + ["Trainer.train_steps=5"], capsys)[0] == 0
  recorded = json.loads((run / fingerprint.FINGERPRINT_FILE).read_text())
  shard = str(root / "train-00003-of-00004")
  # A fresh streamed training split is not counted (validation and test are).
  assert recorded["splits"]["train"]["files"][shard] == {"bytes": os.path.getsize(shard), "records": None}
  assert recorded["splits"]["validation"]["examples"] == 180
  checkpoint = {p: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}

  os.rename(shard, tmp_path / "aside")
  code, err = _cli(run, bindings + ["Trainer.train_steps=10"], capsys)
  assert code == main.EXIT_BAD_INPUT and len(err.strip().splitlines()) == 1
  assert f"train: file {shard} is gone" in err
  assert "--allow_data_change" in err
  os.rename(tmp_path / "aside", shard)

  shutil.copy(shard, root / "train-extra")
  code, err = _cli(run, bindings + ["Trainer.train_steps=10"], capsys)
  assert code == main.EXIT_BAD_INPUT and f"train: new file {root / 'train-extra'} (" in err
  assert {p: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == checkpoint  # nothing written

  # Intended: the flag resumes, and the fingerprint then describes the new data.
  code, err = _cli(run, bindings + ["Trainer.train_steps=10"], capsys, "--allow_data_change")
  assert code == 0, err
  recorded = json.loads((run / fingerprint.FINGERPRINT_FILE).read_text())
  assert str(root / "train-extra") in recorded["splits"]["train"]["files"]
  assert checkpointing.checkpoint_steps(str(run / "checkpoints"))[0] == 10


def test_npy_files_replaced_by_larger_ones_are_refused_naming_the_file(tmp_path, capsys):
  digits = data.digits()
  paths = [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
  np.save(paths[0], digits.train.features[:200])
  np.save(paths[1], digits.train.labels[:200])
  bindings = ["Trainer.data=@npy", f"npy.train={paths}", f"npy.validation={paths}", f"npy.test={paths}",
              "npy.num_classes=10", *SMALL, "Trainer.train_steps=5"]
  run = tmp_path / "run"
  assert _cli(run, bindings, capsys)[0] == 0
  before = os.path.getsize(paths[0])
  np.save(paths[0], digits.train.features[:400])
  np.save(paths[1], digits.train.labels[:400])
  code, err = _cli(run, bindings[:-1] + ["Trainer.train_steps=10"], capsys)
  assert code == main.EXIT_BAD_INPUT
  assert f"train: {paths[0]}: bytes {os.path.getsize(paths[0])}, was {before}" in err
  assert "train: examples 400, was 200" in err and "validation: examples 400, was 200" in err


@pytest.mark.slow
def test_in_memory_data_unchanged_resumes_and_an_old_run_gets_a_fingerprint(tmp_path, capsys):
  run = tmp_path / "run"
  tiny = ["Trainer.steps_per_loop=2", "MLP.hidden_sizes=(8,)"]
  assert _cli(run, tiny + ["Trainer.train_steps=4"], capsys)[0] == 0
  recorded = (run / fingerprint.FINGERPRINT_FILE).read_text()
  assert json.loads(recorded)["splits"]["train"]["kind"] == "array"
  code, err = _cli(run, tiny + ["Trainer.train_steps=6"], capsys)
  assert code == 0, err
  assert (run / fingerprint.FINGERPRINT_FILE).read_text() == recorded
  os.remove(run / fingerprint.FINGERPRINT_FILE)  # a run directory from before fingerprints
  code, err = _cli(run, tiny + ["Trainer.train_steps=8"], capsys)
  assert code == 0, err
  assert (run / fingerprint.FINGERPRINT_FILE).read_text() == recorded
  (run / fingerprint.FINGERPRINT_FILE).write_text("{not json")
  code, err = _cli(run, tiny + ["Trainer.train_steps=8"], capsys)
  assert code == main.EXIT_BAD_INPUT and f"{run / fingerprint.FINGERPRINT_FILE} is damaged" in err


def test_a_changed_in_memory_array_changes_the_digest():
  digits = data.digits()
  changed = data.ArrayData(features=digits.train.features.copy(), labels=digits.train.labels.copy())
  changed.labels[-1] = (changed.labels[-1] + 1) % 10
  old, new = (fingerprint.split_fingerprint(split) for split in (digits.train, changed))
  assert fingerprint.differences({"splits": {"train": old}}, {"splits": {"train": new}}) == [
      "train: contents differ (digest of the labels and sampled feature rows)"]


# --- Bad records deep in a stream -------------------------------------------------------------------


def _missing_label(feature):
  feature["lbl"].CopyFrom(feature["label"])
  del feature["label"]


def _short_features(feature):
  del feature["features"].float_list.value[-1]


def _float_label(feature):
  value = feature["label"].int64_list.value[0]
  feature["label"].Clear()
  feature["label"].float_list.value.append(value)


@pytest.mark.parametrize("change, expected", [
    (_missing_label, "Feature: label (data type: int64) is required but could not be found"),
    (_short_features, "Key: features.  Can't parse serialized Example"),
    (_float_label, "Key: label.  Data types don't match"),
])
def test_a_bad_record_deep_in_the_stream_is_named_in_one_line(shards, tmp_path, capsys, change, expected):
  root, bindings = shards
  shard = str(root / "train-00001-of-00004")
  _rewrite_record(shard, BAD, change)
  code, err = _cli(tmp_path / "run", bindings + ["Trainer.train_steps=30"], capsys)
  assert code == diagnosis.EXIT_BAD_DATA
  assert err.count("\n") == 1 and f"train data (tfrecord): {shard}: record {BAD}: {expected}" in err


@pytest.mark.slow
def test_a_class_id_out_of_range_stops_the_run_and_a_fixed_file_resumes(shards, tmp_path, capsys):
  """With label smoothing, one_hot(10, 10) is all zeros and the run would train on it silently."""
  root, bindings = shards
  bindings = bindings + ["softmax_cross_entropy.label_smoothing=0.1"]
  shard = str(root / "train-00001-of-00004")
  shutil.copy(shard, tmp_path / "good")
  _rewrite_record(shard, BAD, lambda feature: feature["label"].int64_list.value.__setitem__(0, 10))
  run = tmp_path / "run"
  code, err = _cli(run, bindings + ["Trainer.train_steps=30"], capsys)
  assert code == diagnosis.EXIT_BAD_DATA and err.count("\n") == 1
  assert f"{shard}: record {BAD}: 'label' is a class id outside [0, num_classes=10): 10" in err
  steps = checkpointing.checkpoint_steps(str(run / "checkpoints"))
  assert steps and f"the last checkpoint ({run / 'checkpoints' / f'ckpt-{steps[0]}'}) is intact" in err
  assert tf.train.load_checkpoint(str(run / "checkpoints" / f"ckpt-{steps[0]}")).get_tensor(
      "step/.ATTRIBUTES/VARIABLE_VALUE") == steps[0]
  shutil.copy(tmp_path / "good", shard)  # the fix: the original file
  code, err = _cli(run, bindings + ["Trainer.train_steps=30"], capsys)
  assert code == 0, err
  assert json.loads((run / "results.json").read_text())["restored_from"].endswith(f"ckpt-{steps[0]}")


def test_a_corrupted_or_truncated_file_is_named_at_start(shards, tmp_path, capsys):
  root, bindings = shards
  path = root / "validation"
  good = path.read_bytes()
  damaged = bytearray(good)
  damaged[len(good) // 2] ^= 0xFF
  path.write_bytes(bytes(damaged))
  code, err = _cli(tmp_path / "run", bindings + ["Trainer.train_steps=5"], capsys)
  assert code == main.EXIT_BAD_INPUT and err.count("\n") == 1
  assert f"validation_files: {path}: record " in err and "corrupted record at" in err
  assert not (tmp_path / "run").exists()
  path.write_bytes(good[:len(good) // 2 + 7])  # TensorFlow alone reads this as a shorter file
  code, err = _cli(tmp_path / "run", bindings + ["Trainer.train_steps=5"], capsys)
  assert code == main.EXIT_BAD_INPUT and err.count("\n") == 1
  assert f"{path}: ends inside record " in err and "the file is truncated" in err


@pytest.mark.slow
def test_a_file_deleted_during_the_run_is_named(shards, tmp_path):
  root, bindings = shards
  deleted = root / "validation"

  def delete(step, metrics):
    if deleted.exists():
      deleted.unlink()

  with pytest.raises(diagnosis.InputError) as raised:
    trainer.train([QUICKSTART], bindings + ["Trainer.train_steps=15"], model_dir=str(tmp_path / "run"),
                  callbacks=[delete])
  assert str(raised.value).startswith(f"validation data (tfrecord): {deleted}: the file is gone")
  assert "\n" not in str(raised.value)


def test_a_memory_mapped_file_truncated_during_the_run_is_named(tmp_path):
  """Rows past the end of a shrunken .npy would be read as garbage: the reader refuses them."""
  digits = data.digits()
  paths = [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
  np.save(paths[0], digits.train.features)
  np.save(paths[1], digits.train.labels)
  splits = data.npy(train=paths, validation=paths, test=paths, num_classes=10)
  stream = iter(pipeline.train_dataset(splits.train, global_batch_size=64, seed=0, start_step=0))
  next(stream)
  os.truncate(paths[0], os.path.getsize(paths[0]) // 2)
  with pytest.raises(tf.errors.OpError) as raised:
    for _ in range(40):  # a few epochs: some row in the lost half comes soon
      next(stream)
  found = diagnosis.locate(splits, raised.value)
  assert found.startswith(f"npy data: {paths[0]}: row ") and "is past the end of the file" in found


@gin.configurable
def global_state_resetting_digits(**kwargs):
  """A data factory that resets Python's and NumPy's global random state, as the mnist1d package does."""
  random.seed(42)
  np.random.seed(42)
  return digits(**kwargs)


def _initial_weights(seed: int, tmp_path) -> list:
  parsing.parse([QUICKSTART], ["Trainer.data=@global_state_resetting_digits", f"Trainer.seed={seed}",
                               *helpers.DROPOUT])
  run = builder.build(Trainer(), strategy=tf.distribute.get_strategy(), model_dir=str(tmp_path / "unused"))
  return helpers.model_weights(run)


def test_a_factory_resetting_global_random_state_does_not_collapse_seeds(tmp_path):
  """Weights (and, on Keras 3, the dropout RNG state among the model's variables) follow Trainer.seed."""
  seed_0, seed_1, seed_0_again = (_initial_weights(seed, tmp_path) for seed in (0, 1, 0))
  helpers.assert_same_weights(seed_0_again, seed_0)
  assert all(not np.array_equal(a, b) for (_, a), (_, b) in zip(seed_0, seed_1) if a.size > 1 and a.any())
  assert not (tmp_path / "unused").exists()
