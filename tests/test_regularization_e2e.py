"""Regularization through the whole trainer: shipped configs, penalty values, decay, exact zeros."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from tests.helpers import FAST, REPO, kernel_arrays, read_scalars, run_main, train_in_process

CONFIGS = os.path.join(REPO, "gin_configs")
SHORT = ["Trainer.train_steps=40", "Trainer.steps_per_loop=20", "Trainer.eval_every=40",
         "Trainer.checkpoint_every=40"]


@pytest.mark.parametrize("config, penalty_tag", [
    ("regularization/l1.gin", "penalty/l1"),
    ("regularization/proximal_l1.gin", None),
    ("regularization/adamw.gin", None),
    ("regularization/layer_regularizer.gin", "penalty/model_losses"),
    ("cnn.gin", None),
])
def test_each_shipped_config_trains_through_the_cli(tmp_path, config, penalty_tag):
  model_dir = tmp_path / "run"
  args = [f"--gin_file={os.path.join(CONFIGS, config)}", f"--model_dir={model_dir}"]
  assert run_main(args + [f"--gin_bindings={b}" for b in SHORT]) == 0
  train = read_scalars(str(model_dir / "train"))
  if penalty_tag:
    assert all(value > 0 for _, value in train[penalty_tag])
  assert np.isfinite([v for _, v in train["train/loss"]]).all()


def test_penalty_values_equal_numpy_on_the_checkpointed_weights(tmp_path):
  """With a zero learning rate the weights stay at init, so each logged penalty is exact."""
  bindings = FAST + ["Trainer.train_steps=50", "Trainer.learning_rate=0.0",
                     "Trainer.regularizers=[@L2(), @L1()]", "L2.scale=0.01", "L1.scale=0.001",
                     "MLP.kernel_regularizer=@KerasL2()", "KerasL2.l2=0.002"]
  trainer, results = train_in_process(str(tmp_path), bindings)
  kernels = kernel_arrays(trainer)
  expected = {"penalty/l2": 0.01 * sum((k.astype(np.float64) ** 2).sum() for k in kernels),
              "penalty/l1": 0.001 * sum(np.abs(k.astype(np.float64)).sum() for k in kernels),
              "penalty/model_losses": 0.002 * sum((k.astype(np.float64) ** 2).sum() for k in kernels)}
  for tag, value in expected.items():
    assert results[tag] == pytest.approx(value, rel=1e-5), tag
  assert results["penalty/total"] == pytest.approx(sum(expected.values()), rel=1e-5)
  assert results["train/loss"] == pytest.approx(results["train/data_loss"] + results["penalty/total"],
                                                rel=1e-5)


def test_term_and_layer_regularizer_on_the_same_variables_warn(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  train_in_process(str(tmp_path), FAST + ["Trainer.train_steps=10", "Trainer.steps_per_loop=10",
                                          "MLP.kernel_regularizer=@KerasL2()"])
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any("dense_0/kernel" in message for message in warnings), warnings  # Keras 3: mlp/dense_0/kernel


def test_effective_weight_decay_is_logged_as_lr_times_rate(tmp_path):
  model_dir = str(tmp_path)
  train_in_process(model_dir, FAST, gin_files=[os.path.join(CONFIGS, "regularization/adamw.gin")])
  train = read_scalars(os.path.join(model_dir, "train"))
  for (_, decay), (_, rate) in zip(train["optimizer/weight_decay"], train["optimizer/learning_rate"]):
    assert decay == pytest.approx(rate * 1e-2, rel=1e-6)


def _zero_fraction(trainer) -> float:
  kernels = kernel_arrays(trainer)
  return sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


@pytest.mark.slow
def test_proximal_l1_gives_exact_zeros_where_subgradient_l1_gives_none(tmp_path):
  """Digits MLP, SGD+momentum, 2000 steps: same objective, same scale, two ways of applying it."""
  def run(name: str, config: str, bindings=()):
    return train_in_process(str(tmp_path / name), list(bindings), gin_files=[os.path.join(CONFIGS, config)])
  baseline, base_results = run("none", "regularization/l1.gin", ["Trainer.regularizers=[]"])
  proximal, prox_results = run("prox", "regularization/proximal_l1.gin")
  subgradient, _ = run("l1", "regularization/l1.gin")
  assert _zero_fraction(baseline) == 0.0
  assert _zero_fraction(proximal) >= 0.25
  assert prox_results["test/accuracy"] >= base_results["test/accuracy"] - 0.02
  assert _zero_fraction(subgradient) < 1e-3
