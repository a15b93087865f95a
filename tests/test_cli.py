"""The real CLI end to end: train, read the events back, resume, and the operative config.

The session's `cli_runs` (tests/cli_fixtures.py): one fresh process trains the quickstart for 200 steps
from a directory *outside* the repo (so the shipped gin configs must resolve through the package search
path), a second one resumes to 300.
"""

from __future__ import annotations

import math
import os

import pytest

from tests.helpers import read_scalars, read_texts
from trainer.metrics import tags
from trainer.metrics.events import read_tags

# Every test reads the two CLI subprocess runs of the session's `cli_runs` fixture (~20 s).
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

TRAIN_TAGS = {"train/loss", "train/data_loss", "train/accuracy", "penalty/total", "penalty/l2",
              "optimizer/learning_rate", "perf/steps_per_sec", "perf/examples_per_sec"}
EVAL_TAGS = {"eval/loss", "eval/accuracy", "test/loss", "test/accuracy"}


def test_expected_tags_are_written_with_finite_values(cli_runs):
  model_dir = cli_runs.model_dir
  train = read_scalars(os.path.join(model_dir, "train"))
  evaluation = read_scalars(os.path.join(model_dir, "eval"))
  assert TRAIN_TAGS <= set(train), sorted(train)
  assert EVAL_TAGS <= set(evaluation), sorted(evaluation)
  for series in list(train.values()) + list(evaluation.values()):
    assert all(math.isfinite(value) for _, value in series)


def test_every_written_tag_is_registered_and_documented(cli_runs):
  """The tag registry is complete: each tag of a real run (all kinds, all directories) is in it."""
  model_dir = cli_runs.model_dir
  for directory in (tags.TRAIN, tags.EVAL):
    for tag in read_tags(os.path.join(model_dir, directory)):
      entry = tags.find(tag)  # raises UnknownTagError for an unregistered tag
      assert entry.directory in (directory, tags.EACH) and entry.doc, tag
  assert not [name for name in os.listdir(model_dir) if "tfevents" in name]  # model_dir itself is no run


def test_resume_continues_the_step_counter_without_repeats_or_gaps(cli_runs):
  model_dir, first_log, second_log = cli_runs.model_dir, cli_runs.first, cli_runs.second
  steps = [step for step, _ in read_scalars(os.path.join(model_dir, "train"))["train/loss"]]
  assert steps == [50, 100, 150, 200, 250, 300]
  assert "starting from scratch" in first_log
  assert "resumed from" in second_log and "ckpt-200 at step 200" in second_log
  eval_steps = [step for step, _ in read_scalars(os.path.join(model_dir, "eval"))["eval/accuracy"]]
  assert eval_steps == [100, 200, 300]


def test_total_loss_is_data_loss_plus_penalty(cli_runs):
  model_dir = cli_runs.model_dir
  train = read_scalars(os.path.join(model_dir, "train"))
  columns = zip(train["train/loss"], train["train/data_loss"], train["penalty/total"])
  for (_, loss), (_, data), (_, penalty) in columns:
    assert penalty > 0
    assert loss == pytest.approx(data + penalty, rel=1e-5)


def test_operative_config_is_written_to_file_and_tensorboard(cli_runs):
  model_dir = cli_runs.model_dir
  with open(os.path.join(model_dir, "operative_config.gin")) as f:
    text = f.read()
  assert "Trainer.train_steps = 300" in text and "L2.scale = 0.0001" in text
  texts = read_texts(os.path.join(model_dir, "train"))
  assert "Trainer.train_steps = 200" in texts["config/operative_gin"][0]
  assert "dense_0/kernel" in texts["regularizers/l2"][0]  # Keras 3: mlp/dense_0/kernel


def test_checkpoints_are_kept_and_named_by_step(cli_runs):
  model_dir = cli_runs.model_dir
  names = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
  assert {"ckpt-100.index", "ckpt-200.index", "ckpt-300.index", "checkpoint"} <= set(names)


def test_one_log_line_per_loop(cli_runs):
  first_log = cli_runs.first
  lines = [line for line in first_log.splitlines() if "train | step:" in line]
  assert len(lines) == 4
  assert "step: 200/200" in lines[-1] and "eval/accuracy:" in lines[-1] and "steps/sec:" in lines[-1]
