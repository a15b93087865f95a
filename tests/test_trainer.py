"""The training loop in process: accuracy of the quickstart, exact resume, replica invariance."""

from __future__ import annotations

import pytest

from tests.conftest import mirrored
from tests.helpers import DROPOUT, FAST, assert_same_weights, model_weights, train_in_process


def test_quickstart_reaches_95_percent_test_accuracy(tmp_path):
  _, results = train_in_process(str(tmp_path))
  assert results["test/accuracy"] >= 0.95, results
  assert results["train/loss"] > results["train/data_loss"]  # the L2 penalty is in the objective


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path):
  """Data position, optimizer slots, schedule, the dropout RNG and Mixup's draws (stateless in seed, step
  and replica) all continue: weights match bit for bit."""
  bindings = FAST + DROPOUT + ["Trainer.regularizers=[@L2(), @Mixup()]", "Mixup.alpha=0.4",
                               "softmax_cross_entropy.label_smoothing=0.1"]
  straight, _ = train_in_process(str(tmp_path / "straight"), bindings)
  train_in_process(str(tmp_path / "split"), bindings + ["Trainer.train_steps=100"])
  resumed, _ = train_in_process(str(tmp_path / "split"), bindings)
  assert int(resumed.step.numpy()) == 200
  assert_same_weights(model_weights(resumed), model_weights(straight))


def test_mirrored_replicas_match_a_single_device(tmp_path):
  """In process only 2 replicas: TF's collective keys clash between Mirrored strategies of different
  sizes in one process; the 1/2/4-device comparison runs through the CLI in separate processes."""
  bindings = FAST + ["Trainer.train_steps=100", "Trainer.batch_size=64"]
  single, single_results = train_in_process(str(tmp_path / "one"), bindings)
  multi, multi_results = train_in_process(str(tmp_path / "many"), bindings, strategy=mirrored(2))
  assert_same_weights(model_weights(multi), model_weights(single), atol=1e-5)
  for key in ("train/loss", "train/data_loss", "penalty/total", "eval/loss"):
    assert multi_results[key] == pytest.approx(single_results[key], rel=1e-5), key
