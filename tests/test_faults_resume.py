"""A run directory damaged between runs: checkpoints deleted, emptied, truncated or garbled, the checkpoint
state file damaged, a save killed before its index, config.gin damaged. The rerun falls back to the newest
readable checkpoint or stops with a message naming the culprit (exit 2), leaving the directory untouched.

One short run (`base_run`) is trained once per module; tests damage copies of it.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil

import pytest
import tensorflow as tf

from tests import helpers
from tests.helpers import run_main_captured, short_run_args, snapshot, train_in_process
from trainer import main


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A finished 20-step run with checkpoints at steps 10 and 20."""
  model_dir = tmp_path_factory.mktemp("faults") / "base"
  assert helpers.run_main(short_run_args(model_dir)) == 0
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
  code, output = run_main_captured(short_run_args(copy_of, steps=20), capsys, caplog)
  assert code == 0, output
  assert "fell back to ckpt-10" in output and "ckpt-20" in output
  after = snapshot(copy_of)
  kept = [p for p in before if "ckpt-10" in p or p == "config.gin"]
  assert {p: after[p] for p in kept} == {p: before[p] for p in kept}  # the good checkpoint is untouched


@pytest.mark.parametrize("how", HOW)
def test_damaged_checkpoint_state_file_is_rewritten(copy_of, capsys, caplog, how):
  damage(copy_of / "checkpoints" / "checkpoint", how)
  args = short_run_args(copy_of, steps=30, extra=["Trainer.keep_checkpoints=2"])
  code, output = run_main_captured(args, capsys, caplog)
  assert code == 0, output
  state = tf.train.get_checkpoint_state(str(copy_of / "checkpoints"))
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-20", "ckpt-30"]
  assert not (copy_of / "checkpoints" / "ckpt-10.index").exists()  # the manager still deletes old ones


def test_every_checkpoint_damaged_is_a_clear_error(copy_of, capsys, caplog):
  for step in (10, 20):
    damage(copy_of / "checkpoints" / f"ckpt-{step}.index", "garble")
  before = snapshot(copy_of)
  code, output = run_main_captured(short_run_args(copy_of), capsys, caplog)
  assert code == main.EXIT_BAD_INPUT
  assert f"no readable checkpoint in {copy_of / 'checkpoints'}" in output
  assert snapshot(copy_of) == before


def _corrupt(path) -> None:
  data = bytearray(open(path, "rb").read())
  for i in range(min(len(data), 64), min(len(data), 256)):
    data[i] ^= 0xFF
  with open(path, "wb") as f:
    f.write(data)


def _resume_in_process(model_dir, steps: int):
  """`trainer.train` (the API's path) resuming the base run to `steps`; the built run."""
  trainer, _ = train_in_process(str(model_dir), [f"Trainer.train_steps={steps}", *helpers.SHORT])
  return trainer


@pytest.mark.parametrize("damage", ["corrupt_data", "truncated_index"])
def test_unreadable_newest_checkpoint_falls_back_to_the_previous_one(copy_of, caplog, damage):
  newest = copy_of / "checkpoints" / "ckpt-20"
  if damage == "corrupt_data":
    _corrupt(glob.glob(f"{newest}.data-*")[0])
  else:
    with open(f"{newest}.index", "r+b") as f:
      f.truncate(20)
  caplog.set_level(logging.WARNING)
  trainer = _resume_in_process(copy_of, 30)
  assert any("ckpt-20 is unreadable" in r.getMessage() and "falling back" in r.getMessage()
             for r in caplog.records)
  assert int(trainer.step.numpy()) == 30


def test_a_save_killed_before_its_index_was_written_is_not_a_candidate(copy_of):
  os.remove(copy_of / "checkpoints" / "ckpt-20.index")  # what a kill mid-save leaves
  assert int(_resume_in_process(copy_of, 30).step.numpy()) == 30


@pytest.mark.parametrize("how", HOW)
def test_damaged_config_is_refused_naming_the_file(copy_of, capsys, caplog, how):
  damage(copy_of / "config.gin", how)
  before = snapshot(copy_of)
  code, output = run_main_captured(short_run_args(copy_of), capsys, caplog)
  assert code == main.EXIT_BAD_INPUT
  assert f"{copy_of / 'config.gin'} is missing or damaged" in output and "--allow_config_change" in output
  assert snapshot(copy_of) == before

