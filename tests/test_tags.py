"""The tag registry: lookups, what derives from it, and that the docs list every tag."""

from __future__ import annotations

import os

import pytest

from tests.helpers import REPO
from trainer.loop.early_stopping import EarlyStopping
from trainer.metrics import tags


def test_exact_names_and_patterns_are_found():
  assert tags.find("eval/accuracy").pattern == "eval/accuracy"
  assert tags.find("penalty/model_losses").pattern == "penalty/model_losses"  # exact beats the pattern
  assert tags.find("penalty/weight_decay_2").pattern == "penalty/<term>"
  assert tags.find("norms/dense_1/kernel_l2").pattern == "norms/<layer>/kernel_l2"
  assert tags.find("weights/mlp/dense_0/kernel").pattern == "weights/<path>"  # <path> spans components
  with pytest.raises(tags.UnknownTagError, match="eval/acc"):
    tags.find("eval/acc")
  with pytest.raises(tags.UnknownTagError):
    tags.find("penalty/a/b")  # <term> is one component


def test_every_entry_is_documented_in_the_metrics_doc():
  text = open(os.path.join(REPO, "docs", "METRICS.md")).read()
  missing = [entry.pattern for entry in tags.TAGS if entry.doc and f"`{entry.pattern}`" not in text
             and not entry.pattern.startswith("_hparams_")]
  assert not missing, f"tags missing from docs/METRICS.md: {missing}"
  assert all(entry.doc for entry in tags.TAGS)


def test_evaluated_metrics_and_early_stopping_direction_derive_from_the_registry():
  assert set(tags.evaluated()) == {"eval/loss", "eval/accuracy", "train_eval/loss", "train_eval/accuracy",
                                   "gap/loss", "gap/accuracy"}
  assert set(tags.evaluated(classification=False)) == {"eval/loss", "train_eval/loss", "gap/loss"}
  for metric in tags.evaluated():
    assert EarlyStopping(metric=metric).maximize == tags.find(metric).higher_is_better, metric
  assert not EarlyStopping(metric="gap/accuracy").maximize  # a gap shrinks when things improve


def test_console_line_and_report_columns_come_from_the_registry():
  assert tags.console() == ("train/loss", "train/data_loss", "train/accuracy", "eval/loss", "eval/accuracy")
  columns = tags.columns()
  assert columns["eval_acc"].pattern == "eval/accuracy" and columns["test_acc"].directory == tags.EVAL
  assert len(columns) == len(set(columns))
