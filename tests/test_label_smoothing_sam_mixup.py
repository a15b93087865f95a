"""Label smoothing against Keras; SAM and Mixup in real runs: logging, HParams, bad input.

Exact resume with Mixup and label smoothing is tested with the other state that must continue, in
tests/test_trainer.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import trainer
from tests.helpers import read_scalars, train_in_process
from trainer.loop import losses
from trainer.metrics import tags

LOGITS = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
LABELS = np.array([0, 3, 1, 1, 2], np.int32)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
def test_label_smoothing_equals_keras_categorical_cross_entropy(smoothing):
  got = losses.softmax_cross_entropy(tf.constant(LABELS), tf.constant(LOGITS), label_smoothing=smoothing)
  keras = tf.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing,
                                                  reduction="none")
  np.testing.assert_allclose(got.numpy(), keras(np.eye(4)[LABELS], LOGITS).numpy(), rtol=1e-6)


def test_no_smoothing_is_the_sparse_cross_entropy_bit_for_bit():
  got = losses.softmax_cross_entropy(tf.constant(LABELS), tf.constant(LOGITS))
  expected = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=LABELS, logits=LOGITS)
  np.testing.assert_array_equal(got.numpy(), expected.numpy())


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, float("nan")])
def test_smoothing_outside_0_1_is_refused_naming_the_binding(smoothing):
  with pytest.raises(ValueError, match="softmax_cross_entropy: label_smoothing"):
    losses.softmax_cross_entropy(tf.constant(LABELS), tf.constant(LOGITS), label_smoothing=smoothing)


def test_sam_and_mixup_log_their_tags_and_hparams_and_leave_the_weight_statistics_alone(tmp_path):
  """What the new terms add to TensorBoard and HParams. `norms/weights_l2` covers what shrinks weights:
  SAM's perturbed biases and Mixup's nothing do not count, so a run with only them reports the default
  selection (the kernels)."""
  run, results = train_in_process(str(tmp_path), [
      "Trainer.regularizers=[@SAM(), @Mixup()]", "SAM.rho=0.05", "Mixup.alpha=0.2",
      "softmax_cross_entropy.label_smoothing=0.1", "Trainer.train_steps=4", "Trainer.steps_per_loop=2",
      "Trainer.eval_every=2", "MLP.hidden_sizes=(8,)"])
  scalars = read_scalars(os.path.join(tmp_path, "train"))
  for tag in scalars:
    tags.find(tag)  # every written tag is registered
  assert [value for _, value in scalars["sharpness/sam_train_perturbation_norm"]] == pytest.approx([0.05] * 2)
  assert all(value > 0 for _, value in scalars["sharpness/sam_train"])
  assert all(0 < value < 1 for _, value in scalars["train/mixing_lambda"])
  assert 0 < results["train/accuracy"] < 1
  assert {"penalty/sam", "penalty/mixup"}.isdisjoint(scalars)  # no objective penalty of their own
  hparams = run.hparams
  assert hparams["label_smoothing"] == pytest.approx(0.1) and hparams["loss"] == "softmax_cross_entropy"
  assert (hparams["reg/sam/type"], hparams["reg/sam/rho"], hparams["reg/sam/adaptive"],
          hparams["reg/sam/perturbation"]) == ("SAM", 0.05, False, "global")
  assert "reg/sam/eta" not in hparams and hparams["reg/mixup/alpha"] == pytest.approx(0.2)
  kernels = [v.numpy() for v in run.model.trainable_variables if len(v.shape) == 2]
  written = dict(scalars["norms/weights_l2"])[4]
  assert written == pytest.approx(np.sqrt(sum(np.sum(k.astype(np.float64) ** 2) for k in kernels)), rel=1e-5)
  assert len(run.terms[0].selected) == 4  # SAM perturbs kernels and biases


def test_mixup_cutmix_and_reference_asam_train_and_report_their_settings(tmp_path):
  """timm's per-batch switch and ASAM with the reference code's scaled parameters in a real run (the
  digits are 8x8 images): they train, log the mixing lambda, and HParams carry their settings."""
  run, results = train_in_process(str(tmp_path), [
      "Trainer.regularizers=[@SAM(), @MixupCutMix()]", "SAM.rho=0.5", "SAM.adaptive=True",
      "SAM.scaled='reference'", "MixupCutMix.prob=0.8", "Trainer.train_steps=4", "Trainer.steps_per_loop=2",
      "Trainer.eval_every=2", "MLP.hidden_sizes=(8,)"])
  scalars = read_scalars(os.path.join(tmp_path, "train"))
  assert all(0 < value <= 1 for _, value in scalars["train/mixing_lambda"])
  assert np.isfinite(results["train/loss"])
  hparams = run.hparams
  settings = ("type", "mixup_alpha", "cutmix_alpha", "prob", "switch_prob")
  expected = ["MixupCutMix", 0.8, 1.0, 0.8, 0.5]
  assert [hparams[f"reg/mixup_cutmix/{setting}"] for setting in settings] == expected
  assert hparams["reg/sam/scaled"] == "reference"


@pytest.mark.parametrize("bindings, message", [
    (["Trainer.regularizers=[@Mixup(), @CutMix()]", "Mixup.alpha=1.0", "CutMix.alpha=1.0"],
     r"Trainer.regularizers: at most one batch transform \(Mixup, CutMix\) per run, "
     r"got \['mixup', 'cutmix'\]"),
    (["Trainer.regularizers=[@SAM()]", "SAM.rho=0.05", "SAM.perturbation='local'"],
     "sam: unknown perturbation"),
    (["Trainer.regularizers=[@SAM()]", "SAM.rho=0.05", "VariableSelector.layer_scales={'logits': 2.0}"],
     "sam: SAM's ascent has one radius"),
])
def test_bad_configurations_stop_before_anything_is_written(tmp_path, bindings, message):
  with pytest.raises(trainer.InvalidRunError, match=message):
    trainer.train(["gin_configs/quickstart.gin"], bindings, model_dir=str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
