"""Fault injection: damaged checkpoints (and saves killed before their index), bad startup input, odd
model_dir names, remote filesystems, two writers. Real files, real processes and signals; each test
checks the exit code, that the message names the culprit, that no traceback is printed, and (where
files exist) a checksum snapshot of model_dir.

One short run (`base_run`) is trained once per module; tests damage copies of it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator

import trainer
from tests import helpers
from tests.helpers import FAST, QUICKSTART, REPO, train_in_process
from trainer import api, main
from trainer.common import files
from trainer.config import parsing
from trainer.data import digits
from trainer.loop import builder
from trainer.loop.settings import Trainer
from trainer.runtime import lock

SHORT = ["Trainer.steps_per_loop=10", "Trainer.checkpoint_every=10", "Trainer.eval_every=10",
         "MLP.hidden_sizes=(8,)"]


def _args(model_dir, steps: int = 20, extra=()) -> list[str]:
  bindings = [f"Trainer.train_steps={steps}", *SHORT, *extra]
  return [f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}"] + [f"--gin_bindings={b}" for b in bindings]


def _run(args, capsys, caplog) -> tuple[int, str]:
  """The CLI in this process: (exit code, everything it printed and logged)."""
  caplog.clear()
  with caplog.at_level(logging.INFO):
    code = helpers.run_main(args)
  captured = capsys.readouterr()
  output = captured.out + captured.err + caplog.text
  assert "Traceback" not in output
  return code, output


def snapshot(directory) -> dict[str, str]:
  """{relative path: sha256} of every file under `directory` (the lease excluded)."""
  result = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as file:
        result[os.path.relpath(path, directory)] = hashlib.sha256(file.read()).hexdigest()
  return result


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A finished 20-step run with checkpoints at steps 10 and 20."""
  model_dir = tmp_path_factory.mktemp("faults") / "base"
  assert helpers.run_main(_args(model_dir)) == 0
  assert sorted(n for n in os.listdir(model_dir / "checkpoints") if n.endswith(".index")) == [
      "ckpt-10.index", "ckpt-20.index"]
  return model_dir


@pytest.fixture
def copy_of(base_run, tmp_path):
  model_dir = tmp_path / "run"
  shutil.copytree(base_run, model_dir)
  return model_dir


def damage(path, how: str) -> None:
  """Damages one file the way disks and killed copies do."""
  if how == "delete":
    os.remove(path)
  elif how == "empty":
    open(path, "wb").close()
  elif how == "truncate":
    with open(path, "rb") as file:
      data = file.read()
    with open(path, "wb") as file:
      file.write(data[:len(data) // 2])
  elif how == "garble":
    with open(path, "rb") as file:
      data = bytearray(file.read())
    for i in range(0, len(data), 7):
      data[i] ^= 0x5A
    with open(path, "wb") as file:
      file.write(bytes(data))


HOW = ("delete", "empty", "truncate", "garble")


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("part", ["index", "data-00000-of-00001"])
def test_damaged_newest_checkpoint_falls_back(copy_of, capsys, caplog, part, how):
  damage(copy_of / "checkpoints" / f"ckpt-20.{part}", how)
  before = snapshot(copy_of)
  code, output = _run(_args(copy_of, steps=20), capsys, caplog)
  assert code == 0, output
  assert "fell back to ckpt-10" in output and "ckpt-20" in output
  after = snapshot(copy_of)
  kept = [p for p in before if "ckpt-10" in p or p == "config.gin"]
  assert {p: after[p] for p in kept} == {p: before[p] for p in kept}  # the good checkpoint is untouched


@pytest.mark.parametrize("how", HOW)
def test_damaged_checkpoint_state_file_is_rewritten(copy_of, capsys, caplog, how):
  damage(copy_of / "checkpoints" / "checkpoint", how)
  code, output = _run(_args(copy_of, steps=30, extra=["Trainer.keep_checkpoints=2"]), capsys, caplog)
  assert code == 0, output
  state = tf.train.get_checkpoint_state(str(copy_of / "checkpoints"))
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-20", "ckpt-30"]
  assert not (copy_of / "checkpoints" / "ckpt-10.index").exists()  # the manager still deletes old ones


def test_every_checkpoint_damaged_is_a_clear_error(copy_of, capsys, caplog):
  for step in (10, 20):
    damage(copy_of / "checkpoints" / f"ckpt-{step}.index", "garble")
  before = snapshot(copy_of)
  code, output = _run(_args(copy_of), capsys, caplog)
  assert code == main.EXIT_BAD_INPUT
  assert f"no readable checkpoint in {copy_of / 'checkpoints'}" in output
  assert snapshot(copy_of) == before


HUNDRED_STEPS = FAST + ["Trainer.train_steps=100", "Trainer.checkpoint_every=50", "Trainer.eval_every=50"]


def _corrupt(path: str) -> None:
  data = bytearray(open(path, "rb").read())
  for i in range(min(len(data), 64), min(len(data), 256)):
    data[i] ^= 0xFF
  with open(path, "wb") as f:
    f.write(data)


@pytest.mark.parametrize("damage", ["corrupt_data", "truncated_index"])
def test_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
  model_dir = str(tmp_path)
  train_in_process(model_dir, HUNDRED_STEPS)
  newest = os.path.join(model_dir, "checkpoints", "ckpt-100")
  if damage == "corrupt_data":
    _corrupt(glob.glob(newest + ".data-*")[0])
  else:
    with open(newest + ".index", "r+b") as f:
      f.truncate(20)
  caplog.set_level(logging.WARNING)
  trainer, _ = train_in_process(model_dir, HUNDRED_STEPS + ["Trainer.train_steps=150"])
  assert any("ckpt-100 is unreadable" in r.getMessage() and "falling back" in r.getMessage()
             for r in caplog.records)
  assert int(trainer.step.numpy()) == 150


def test_a_save_killed_before_its_index_was_written_is_not_a_candidate(tmp_path):
  model_dir = str(tmp_path)
  train_in_process(model_dir, HUNDRED_STEPS)
  os.remove(os.path.join(model_dir, "checkpoints", "ckpt-100.index"))  # what a kill mid-save leaves
  trainer, _ = train_in_process(model_dir, HUNDRED_STEPS + ["Trainer.train_steps=120"])
  assert int(trainer.step.numpy()) == 120


@pytest.mark.parametrize("how", HOW)
def test_damaged_config_is_refused_naming_the_file(copy_of, capsys, caplog, how):
  damage(copy_of / "config.gin", how)
  before = snapshot(copy_of)
  code, output = _run(_args(copy_of), capsys, caplog)
  assert code == main.EXIT_BAD_INPUT
  assert f"{copy_of / 'config.gin'} is missing or damaged" in output and "--allow_config_change" in output
  assert snapshot(copy_of) == before


@pytest.mark.parametrize("gin_files, bindings, expected", [
    (["EMPTY"], [], "no gin file or binding sets Trainer.model, Trainer.data, Trainer.optimizer"),
    ([], [], "no gin file or binding sets Trainer.model"),
    ([QUICKSTART], ["Trainer.batch_size='abc'"], "Trainer: batch_size must be an integer >= 1"),
    ([QUICKSTART], ["Trainer.seed=1e23"], "Trainer: seed must be an integer >= 0 and <= 4294967295"),
    ([QUICKSTART], ["Trainer.train_steps=3e9"], "train_steps must be an integer >= 1 and <= 2147483647"),
    ([QUICKSTART], ["Trainer.steps_per_loop=4294967296"], "Trainer: steps_per_loop must be an integer"),
    ([QUICKSTART], ["MLP.hidden_sizes=(-3,)"], "Trainer.model=@MLP failed: ValueError"),
    ([QUICKSTART], ["MLP.activation='nope'"], "Trainer.model=@MLP failed: ValueError"),
    ([QUICKSTART], ["digits.label_noise=-1.0"], "Trainer.data=@digits failed"),
    ([QUICKSTART], ["Trainer.data=@tfrecord", "tfrecord.train_files='/nowhere/*.tfrecord'",
                    "tfrecord.validation_files='/nowhere/v'", "tfrecord.test_files='/nowhere/t'",
                    "tfrecord.feature_shape=(64,)", "tfrecord.num_classes=10"],
     "Trainer.data=@tfrecord failed: FileNotFoundError: train_files: no files match '/nowhere/*.tfrecord'"),
    ([QUICKSTART], ["Trainer.loss=@mean_squared_error"], "loss=@mean_squared_error does not fit digits"),
])
def test_startup_error_is_named_and_leaves_no_trace(tmp_path, capsys, caplog, gin_files, bindings, expected):
  empty = tmp_path / "empty.gin"
  empty.write_text("")
  model_dir = tmp_path / "never" / "run"
  args = ([f"--gin_file={empty if f == 'EMPTY' else f}" for f in gin_files] + [f"--model_dir={model_dir}"]
          + [f"--gin_bindings={b}" for b in bindings])
  code, output = _run(args, capsys, caplog)
  assert code == main.EXIT_BAD_INPUT and expected in output
  assert not (tmp_path / "never").exists()


@pytest.mark.multiprocess
@pytest.mark.parametrize("args, expected", [
    (["--model_dir=/tmp/x", "--bogus=1"], "Unknown command line flag 'bogus'"),
    ([f"--gin_file={QUICKSTART}"], "--model_dir"),
])
def test_flag_errors_exit_2(args, expected):
  process = helpers.run_cli(args)  # the default hang bound: a loaded machine imports TensorFlow slowly
  assert process.returncode == main.EXIT_BAD_INPUT, process.stdout
  assert expected in process.stdout and "Traceback" not in process.stdout


def test_failed_atomic_write_leaves_no_temporary(tmp_path, monkeypatch):
  """A full disk while config.gin (or any atomic file) is written: the error propagates, no `.tmp` stays."""
  real = tf.io.gfile.GFile

  class FullDisk(real):
    def write(self, data):
      raise OSError(28, "No space left on device")

  monkeypatch.setattr(tf.io.gfile, "GFile", FullDisk)
  with pytest.raises(OSError, match="No space left"):
    files.write_text(str(tmp_path / "config.gin"), "x = 1\n")
  monkeypatch.setattr(tf.io.gfile, "GFile", real)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["a* ?b ünï", "trailing/", "~/occam-faults-home-run"])
def test_any_model_dir_name_resumes(tmp_path, monkeypatch, name):
  """Names with glob characters, spaces, unicode, a trailing slash or `~` are names: the rerun resumes."""
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.chdir(tmp_path)
  decoy = tmp_path / "aX XbXünï"  # what the pattern `a* ?b ünï` would also match
  decoy.mkdir()
  first = trainer.train([QUICKSTART], ["Trainer.train_steps=10", *SHORT], model_dir=name)
  assert first.restored_from is None and first.step == 10
  resumed = trainer.train([QUICKSTART], ["Trainer.train_steps=20", *SHORT], model_dir=name)
  assert resumed.restored_from.endswith("ckpt-10") and resumed.step == 20
  expected = os.path.abspath(os.path.expanduser(name))
  assert resumed.model_dir == expected and os.path.isdir(os.path.join(expected, "checkpoints"))
  assert os.listdir(decoy) == []


@pytest.mark.parametrize("name", ["run[1]", "back\\slash"])
def test_model_dir_tensorflow_reads_as_a_pattern_is_refused(tmp_path, capsys, caplog, name):
  code, output = _run(_args(tmp_path / name), capsys, caplog)
  assert code == main.EXIT_BAD_INPUT and f"--model_dir={tmp_path / name}: TensorFlow cannot read" in output
  assert os.listdir(tmp_path) == []


def test_remote_model_dir_runs_and_resumes_on_ram_filesystem(tmp_path, monkeypatch):
  """TensorFlow's in-memory filesystem stands in for gs://: nothing local is created, the rerun resumes."""
  monkeypatch.chdir(tmp_path)
  model_dir = f"ram://occam-faults-{os.getpid()}/run"
  first = trainer.train([QUICKSTART], ["Trainer.train_steps=10", *SHORT], model_dir=model_dir + "/")
  assert first.model_dir == model_dir and first.step == 10
  resumed = trainer.train([QUICKSTART], ["Trainer.train_steps=20", *SHORT], model_dir=model_dir)
  assert resumed.restored_from == f"{model_dir}/checkpoints/ckpt-10" and resumed.step == 20
  assert tf.io.gfile.exists(f"{model_dir}/config.gin")
  assert not tf.io.gfile.exists(f"{model_dir}/{lock.LOCK_FILE}")
  assert os.listdir(tmp_path) == []
  assert api.resolve_model_dir("gs://bucket/run/") == "gs://bucket/run"


# ---------------------------------------------------------------------------------------------- the lease


def test_lease_refuses_a_live_holder_and_replaces_a_dead_one(tmp_path):
  with lock.acquire(str(tmp_path)):
    with pytest.raises(lock.LockedError, match=rf"pid {os.getpid()} on host {socket.gethostname()}, since"):
      lock.acquire(str(tmp_path))
  assert not (tmp_path / lock.LOCK_FILE).exists()
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                        text=True, check=True)
  now = time.time()
  for holder in ({"pid": int(dead.stdout), "host": socket.gethostname(), "since": now, "heartbeat": now},
                 {"pid": 1, "host": "elsewhere", "since": 0, "heartbeat": now - lock.STALE_SECONDS - 1}):
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps(holder))
    lock.acquire(str(tmp_path)).release()
  (tmp_path / lock.LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "heartbeat": now}))
  with pytest.raises(lock.LockedError, match="pid 1 on host elsewhere"):
    lock.acquire(str(tmp_path))


def test_a_lease_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
  def full_disk(descriptor, mode):
    os.close(descriptor)
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(lock.os, "fdopen", full_disk)
  with pytest.raises(OSError, match="No space left"):
    lock.acquire(str(tmp_path))
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
@pytest.mark.multiprocess
def test_second_run_is_refused_a_killed_run_does_not_block_and_its_late_events_are_purged(
    tmp_path, capsys, caplog):
  """A real training process holds the lease: a second run is refused naming it. SIGKILLed after logging
  steps past its last checkpoint, it blocks nothing; the resumed run's history has one value per step."""
  model_dir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  late = ["Trainer.checkpoint_every=30"]  # logs every 10 steps, checkpoints every 30
  first = subprocess.Popen([sys.executable, "-m", "trainer.main", *_args(model_dir, 100000, late)], cwd=REPO,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    for line in first.stdout:
      if "train | step: 50/" in line:
        break
    code, output = _run(_args(model_dir, steps=60, extra=late), capsys, caplog)
    assert code == main.EXIT_BAD_INPUT
    assert f"is in use by another run (pid {first.pid} on host {socket.gethostname()}, since" in output
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  killed_at = max(int(n[5:-6]) for n in os.listdir(model_dir / "checkpoints") if n.endswith(".index"))
  code, output = _run(_args(model_dir, steps=killed_at + 30, extra=late), capsys, caplog)
  assert code == 0, output
  assert "replacing the stale lease" in output and f"pid {first.pid} is not running" in output
  assert not (model_dir / lock.LOCK_FILE).exists()
  accumulator = plugin_event_accumulator.EventAccumulator(str(model_dir / "train"))  # the server's reader
  accumulator.Reload()
  for tag in accumulator.Tags()["tensors"]:
    steps = [event.step for event in accumulator.Tensors(tag)]
    assert steps == sorted(set(steps)), (tag, steps)  # one value per step
  assert [event.step for event in accumulator.Tensors("train/loss")] == list(range(10, killed_at + 31, 10))


# ---------------------------------------------------------------------------------------- non-finite guard


def test_restore_falls_back_past_a_checkpoint_that_diverges_again(tmp_path, capsys, caplog):
  """A learning-rate spike on the last step of the first loop: ckpt-10 has finite but huge weights and the
  next loop diverges. Restoring ckpt-10 cannot help, so the second restore goes back to ckpt-0."""
  spike = ["Trainer.optimizer=@SGD", "Trainer.learning_rate=@Piecewise()",
           "Piecewise.base_learning_rate=0.01", "Piecewise.boundaries=[9, 10]",
           "Piecewise.multipliers=[1e30, 1.0]", "Trainer.on_nonfinite='restore'",
           "Trainer.restore_lr_factor=1e-15", "Trainer.keep_checkpoints=5"]
  code, output = _run(_args(tmp_path / "run", steps=30, extra=spike), capsys, caplog)
  assert code == 0, output
  assert "ckpt-10 diverged again after it was restored: falling back to an older checkpoint" in output
  assert "restored " + str(tmp_path / "run" / "checkpoints" / "ckpt-0") in output
  values = helpers.checkpoint_values(str(tmp_path / "run"))
  assert all(np.all(np.abs(v) < 1e6) for v in values.values() if np.issubdtype(v.dtype, np.floating))


# ------------------------------------------------------------------------------------------------- seeds


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


def test_tf_config_port_in_use_is_named(tmp_path, capsys, caplog, monkeypatch):
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
    server.bind(("", 0))
    server.listen()
    port = server.getsockname()[1]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": [f"localhost:{port}"]},
                                                "task": {"type": "worker", "index": 0}}))
    code, output = _run(_args(tmp_path / "run") + ["--strategy=multi_worker_mirrored"], capsys, caplog)
  assert code == main.EXIT_BAD_INPUT
  assert f"TF_CONFIG task worker 0: port {port} of localhost:{port} is already in use" in output
  assert not (tmp_path / "run").exists()
