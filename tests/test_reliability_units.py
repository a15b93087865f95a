"""Reliability building blocks: torn/corrupt checkpoints, the config guard, early-stopping decisions."""

from __future__ import annotations

import glob
import logging
import os

import pytest

from tests.helpers import FAST, train_in_process
from trainer.config import guard as config_guard
from trainer.loop.early_stopping import EarlyStopping

SHORT = FAST + ["Trainer.train_steps=100", "Trainer.checkpoint_every=50", "Trainer.eval_every=50"]


def _corrupt(path: str) -> None:
  data = bytearray(open(path, "rb").read())
  for i in range(min(len(data), 64), min(len(data), 256)):
    data[i] ^= 0xFF
  with open(path, "wb") as f:
    f.write(data)


@pytest.mark.parametrize("damage", ["corrupt_data", "truncated_index"])
def test_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
  model_dir = str(tmp_path)
  train_in_process(model_dir, SHORT)
  newest = os.path.join(model_dir, "checkpoints", "ckpt-100")
  if damage == "corrupt_data":
    _corrupt(glob.glob(newest + ".data-*")[0])
  else:
    with open(newest + ".index", "r+b") as f:
      f.truncate(20)
  caplog.set_level(logging.WARNING)
  trainer, _ = train_in_process(model_dir, SHORT + ["Trainer.train_steps=150"])
  assert any("ckpt-100 is unreadable" in r.getMessage() and "falling back" in r.getMessage()
             for r in caplog.records)
  assert int(trainer.step.numpy()) == 150


def test_a_save_killed_before_its_index_was_written_is_not_a_candidate(tmp_path):
  model_dir = str(tmp_path)
  train_in_process(model_dir, SHORT)
  os.remove(os.path.join(model_dir, "checkpoints", "ckpt-100.index"))  # what a kill mid-save leaves
  trainer, _ = train_in_process(model_dir, SHORT + ["Trainer.train_steps=120"])
  assert int(trainer.step.numpy()) == 120


BASE = "Trainer.train_steps = 100\nTrainer.eval_every = 10\nL2.scale = 0.001\nMLP.hidden_sizes = (8, 8)\n"


def test_config_guard_allows_safe_changes_and_refuses_others_with_a_diff():
  safe = (BASE.replace("100", "300").replace("eval_every = 10", "eval_every = 20")
          + "Monitor.sharpness_every = 5\n")
  assert config_guard.unsafe_changes(BASE, safe) == []
  changed = BASE.replace("0.001", "0.01").replace("(8, 8)", "(8, 16)")
  assert config_guard.unsafe_changes(BASE, changed) == [
      "- L2.scale = 0.001", "+ L2.scale = 0.01",
      "- MLP.hidden_sizes = (8, 8)", "+ MLP.hidden_sizes = (8, 16)"]
  assert config_guard.unsafe_changes(BASE, BASE + "L1.scale = 0.1\n") == ["+ L1.scale = 0.1"]


def test_config_guard_ignores_formatting():
  assert config_guard.unsafe_changes(BASE, "# comment\n" + BASE.replace(" = ", "=")) == []


def test_early_stopping_counts_evaluations_without_improvement():
  spec = EarlyStopping(metric="eval/loss", patience=2, min_delta=0.01)
  assert not spec.maximize and not hasattr(spec, "best_step")  # a spec: the builder creates the state
  stopper = spec.create_state()
  decisions = [stopper.update(step, {"eval/loss": loss}) for step, loss in
               [(10, 1.0), (20, 0.5), (30, 0.495), (40, 0.6), (50, 0.3)]]
  assert [d.improved for d in decisions] == [True, True, False, False, True]
  assert [d.stop for d in decisions] == [False, False, False, True, False]
  assert stopper.best_value == 0.3 and int(stopper.best_step.numpy()) == 50


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="up"), "EarlyStopping.mode='up'"),
    (dict(patience=0), "EarlyStopping: patience must be an integer >= 1"),
    (dict(min_delta=-1.0), "EarlyStopping: min_delta must be a finite number >= 0"),
])
def test_early_stopping_arguments_are_checked(kwargs, message):
  with pytest.raises(ValueError, match=message):
    EarlyStopping(**kwargs)


def test_early_stopping_on_an_unknown_metric_lists_the_available_ones():
  with pytest.raises(ValueError, match=r"EarlyStopping.metric='eval/acc'.*eval/accuracy"):
    EarlyStopping(metric="eval/acc").create_state().update(10, {"eval/accuracy": 0.9, "eval/loss": 0.3})
