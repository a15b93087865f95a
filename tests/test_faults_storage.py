"""A disk that fills up mid-run: one line naming the directory, nothing half-written, the rerun resumes.

The run directory lives on a real tmpfs of a few hundred KB (mounted by the test: root only), too
small for the quickstart's ~520 KB checkpoints; growing the filesystem afterwards (a remount) plays
the user freeing space.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import tensorflow as tf

from tests import helpers
from tests.helpers import QUICKSTART
from trainer.runtime import checkpointing

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
