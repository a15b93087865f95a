"""Storage faults: a disk that fills up, names TensorFlow would read as patterns, a remote filesystem.

A disk that fills up mid-run: one line naming the directory, nothing half-written, the rerun resumes.
The run directory lives on a real tmpfs of a few hundred KB (mounted by the test: root only), too
small for the quickstart's ~520 KB checkpoints; growing the filesystem afterwards (a remount) plays
the user freeing space. A failed atomic write leaves no temporary. Any model_dir name (glob characters,
spaces, unicode, `~`, a trailing slash) resumes, or is refused naming it where TensorFlow would read it
as a pattern; TensorFlow's `ram://` filesystem stands in for a remote one (gs://).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import tensorflow as tf

import trainer
from tests import helpers
from tests.helpers import QUICKSTART, SHORT, run_main_captured, short_run_args
from trainer import api, main
from trainer.common import files
from trainer.runtime import checkpointing, lock

STEPS = ["--gin_bindings=Trainer.steps_per_loop=50", "--gin_bindings=Trainer.eval_every=100",
         "--gin_bindings=Trainer.checkpoint_every=100"]


def _mount(path, size: str, *, remount: bool = False) -> None:
  options = f"remount,size={size}" if remount else f"size={size}"
  subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
  """`make(size)`: a directory on a tmpfs of `size` and `grow()`, which enlarges it; unmounted at the end."""
  mounted = []

  def make(size: str):
    path = tmp_path / "disk"
    path.mkdir()
    try:
      _mount(path, size)
    except (OSError, subprocess.CalledProcessError) as error:
      pytest.skip(f"cannot mount a tmpfs here (needs root): {error}")
    mounted.append(path)
    return path, lambda: _mount(path, "8m", remount=True)

  yield make
  for path in mounted:  # lazily: this process may still hold the run's event files open
    subprocess.run(["umount", "--lazy", str(path)], check=True, capture_output=True)


def _train(run, steps: int, capsys) -> tuple[int, str]:
  code = helpers.run_main([f"--gin_file={QUICKSTART}", f"--model_dir={run}", *STEPS,
                           f"--gin_bindings=Trainer.train_steps={steps}"])
  return code, capsys.readouterr().err


def _leftovers(checkpoints, step: int) -> list[str]:
  return [name for name in os.listdir(checkpoints) if name.startswith(f"ckpt-{step}")]


@pytest.mark.slow
@pytest.mark.parametrize("size, first", [("400k", True), ("1000k", False)])
def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_rerun_resumes(small_disk, capsys, size, first):
  """400 KB: the first checkpoint does not fit (config and events were written); 1000 KB: a later one
  (which one depends on the lane: Keras 2 and 3 checkpoints differ in size)."""
  disk, grow = small_disk(size)
  run = disk / "run"
  checkpoints = run / "checkpoints"
  code, err = _train(run, 300, capsys)
  assert code == checkpointing.EXIT_WRITE_FAILED, err
  assert err.count("\n") == 1
  failed_step = int(re.search(r"cannot write checkpoint ckpt-(\d+) to ", err).group(1))
  assert (failed_step == 100) == first
  assert (f"cannot write checkpoint ckpt-{failed_step} to {checkpoints}: No space left on device; nothing of "
          "it was kept and the earlier checkpoints are intact") in err
  assert _leftovers(checkpoints, failed_step) == []  # no data file, no index, no temporary directory
  kept = checkpointing.checkpoint_steps(str(checkpoints))
  assert kept == list(range(failed_step - 100, 0, -100))
  for step in kept:  # every tensor of the earlier checkpoints reads back
    reader = tf.train.load_checkpoint(str(checkpoints / f"ckpt-{step}"))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == step
  grow()
  code, err = _train(run, 300, capsys)
  assert code == 0, err
  results = json.loads((run / "results.json").read_text())
  assert results["step"] == 300
  assert results["restored_from"] == (str(checkpoints / f"ckpt-{kept[0]}") if kept else None)


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
  code, output = run_main_captured(short_run_args(tmp_path / name), capsys, caplog)
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
