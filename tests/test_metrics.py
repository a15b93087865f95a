"""The Monitor's TensorBoard metrics, read back from real runs and recomputed independently in numpy.

References are float64 numpy computations from the final weights of the run (the final checkpoint is
written at the same step as the final events): a forward/backward pass of the ReLU MLP written out
by hand, and an explicit Hessian for the tiny model. The Trainer's own weights at the end are the
checkpoint's (`Trainer.checkpoint_every` divides `train_steps`).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import mirrored
from tests.helpers import FAST, QUICKSTART, read_scalars, train_in_process
from trainer.metrics import tags

L2_SCALE = 1e-4  # quickstart.gin
# L2 in the objective, proximal L1 for exact zeros, label noise for the hparams; histograms and
# (at the last loop) sharpness on.
BINDINGS = FAST + ["Trainer.regularizers=[@L2(), @ProximalL1()]", "ProximalL1.scale=0.1",
                   "digits.label_noise=0.1", "Monitor.histogram_every=100", "Monitor.sharpness_every=200"]
MONITOR_PREFIXES = ("norms/", "sparsity/", "train_eval/", "gap/", "sharpness/")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(trainer, model_dir) of the reference run: 200 steps, loops of 50, evaluations at 100 and 200."""
  model_dir = str(tmp_path_factory.mktemp("run"))
  trainer, _ = train_in_process(model_dir, BINDINGS)
  return trainer, model_dir


def _params(trainer) -> list[np.ndarray]:
  """[W0, b0, W1, b1, ...] of the MLP as float64."""
  return [np.asarray(v.numpy(), np.float64) for v in trainer.model.trainable_variables]


def _last(scalars, tag: str) -> tuple[int, float]:
  return scalars[tag][-1]


def _forward(params, x) -> list[np.ndarray]:
  """The MLP's layer inputs and the logits: [x, relu(x W0 + b0), ..., logits]."""
  activations = [x.reshape(len(x), -1).astype(np.float64)]
  for index in range(0, len(params), 2):
    z = activations[-1] @ params[index] + params[index + 1]
    activations.append(np.maximum(z, 0.0) if index + 2 < len(params) else z)
  return activations


def _cross_entropy(logits, labels) -> tuple[np.ndarray, np.ndarray]:
  """Per-example softmax cross entropy and its gradient with respect to the logits."""
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  rows = np.arange(len(labels))
  dlogits = np.exp(log_probs)
  dlogits[rows, labels] -= 1.0
  return -log_probs[rows, labels], dlogits


def _loss_and_gradients(params, x, labels) -> tuple[float, list[np.ndarray]]:
  """Mean data loss and its gradient, by hand-written backpropagation."""
  activations = _forward(params, x)
  losses, delta = _cross_entropy(activations[-1], labels)
  delta = delta / len(labels)
  gradients: list[np.ndarray] = []
  for index in reversed(range(0, len(params), 2)):
    layer_input = activations[index // 2]
    gradients = [layer_input.T @ delta, delta.sum(axis=0)] + gradients
    delta = (delta @ params[index].T) * (layer_input > 0)
  return float(losses.mean()), gradients


def _flat_norm(arrays) -> float:
  return float(np.sqrt(sum(np.sum(np.square(a)) for a in arrays)))


def test_norms_sparsity_and_penalty_match_numpy(run):
  trainer, model_dir = run
  scalars = read_scalars(f"{model_dir}/train")
  params = _params(trainer)
  kernels, biases = params[0::2], params[1::2]
  step, _ = _last(scalars, "norms/weights_l2")
  assert step == 200
  every_weight = np.concatenate([k.ravel() for k in kernels])
  expected = {
      "norms/weights_l2": _flat_norm(kernels),
      "norms/weights_l1": float(np.abs(every_weight).sum()),
      "norms/excluded_l2": _flat_norm(biases),
      "sparsity/zero_fraction": float(np.mean(every_weight == 0.0)),
      "sparsity/near_zero_fraction": float(np.mean(np.abs(every_weight) < 1e-3)),
  }
  for layer, kernel in zip(["dense_0", "dense_1", "logits"], kernels):
    expected[f"norms/{layer}/kernel_l2"] = _flat_norm([kernel])
  for tag, value in expected.items():
    assert _last(scalars, tag) == (200, pytest.approx(value, rel=1e-5)), tag
  assert 0.05 < expected["sparsity/zero_fraction"] < 0.95  # proximal L1 made real exact zeros
  # penalty/l2 is the mean over the loop's 50 steps, the norms are at its end: they agree loosely.
  assert _last(scalars, "penalty/l2")[1] == pytest.approx(L2_SCALE * expected["norms/weights_l2"] ** 2,
                                                          rel=0.05)


def test_grad_norm_is_the_objective_gradient_on_the_probe_batch(run):
  """norms/grad_l2 = ||grad(data loss + L2 penalty)|| on the first 256 train examples, inference mode."""
  trainer, model_dir = run
  params = _params(trainer)
  train = trainer.splits.train
  _, gradients = _loss_and_gradients(params, train.features[:256], train.labels[:256])
  for index in range(0, len(params), 2):
    gradients[index] = gradients[index] + 2 * L2_SCALE * params[index]
  assert _last(read_scalars(f"{model_dir}/train"), "norms/grad_l2") == (
      200, pytest.approx(_flat_norm(gradients), rel=1e-4))


def test_distance_from_init_uses_the_seeded_initial_weights(run, tmp_path):
  trainer, model_dir = run
  from trainer.config import parsing
  from trainer.loop import builder
  from trainer.loop.settings import Trainer
  parsing.parse([QUICKSTART], BINDINGS)
  fresh = builder.build(Trainer(), strategy=tf.distribute.get_strategy(),
                        model_dir=str(tmp_path))  # untrained
  distance = _flat_norm([a - b for a, b in zip(_params(trainer), _params(fresh))])
  assert _last(read_scalars(f"{model_dir}/train"), "norms/distance_from_init") == (
      200, pytest.approx(distance, rel=1e-5))


def test_gap_is_eval_minus_train_subset_in_inference_mode(run):
  trainer, model_dir = run
  scalars = read_scalars(f"{model_dir}/eval")
  params = _params(trainer)
  splits = trainer.splits
  results = {}
  for name, split in (("train_eval", splits.train), ("eval", splits.validation)):
    count = 512 if name == "train_eval" else split.num_examples
    logits = _forward(params, split.features[:count])[-1]
    results[f"{name}/loss"] = float(_cross_entropy(logits, split.labels[:count])[0].mean())
    results[f"{name}/accuracy"] = float(np.mean(logits.argmax(axis=1) == split.labels[:count]))
  results["gap/loss"] = results["eval/loss"] - results["train_eval/loss"]
  results["gap/accuracy"] = results["train_eval/accuracy"] - results["eval/accuracy"]
  for tag, value in results.items():
    assert [s for s, _ in scalars[tag]] == [100, 200], tag
    assert _last(scalars, tag)[1] == pytest.approx(value, rel=1e-4, abs=1e-6), tag


def test_histograms_cover_the_regularized_weights(run):
  trainer, model_dir = run
  accumulator = event_accumulator.EventAccumulator(f"{model_dir}/train",
                                                   size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  histograms = {tag for tag in accumulator.Tags()["tensors"] if tag.startswith("weights/")}
  from trainer.runtime import compat
  kernels = {f"weights/{compat.variable_path(v)}" for v in trainer.model.trainable_variables
             if len(v.shape) == 2}
  assert histograms == kernels
  assert [e.step for e in accumulator.Tensors(sorted(kernels)[0])] == [100, 200]


def test_hparams_session_holds_the_run_settings(run):
  """Each event directory is a session of the run's group (trainer/metrics/summaries.py), same hparams."""
  _, model_dir = run
  sessions = []
  for directory in tags.SESSIONS:
    accumulator = event_accumulator.EventAccumulator(os.path.join(model_dir, directory))
    accumulator.Reload()
    content = accumulator.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    sessions.append(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info)
  info = sessions[0]
  assert all(session.hparams == info.hparams for session in sessions)
  assert {session.group_name for session in sessions} == {model_dir.rstrip("/").split("/")[-1]}
  hparams = {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
             for key, value in info.hparams.items()}
  assert hparams["reg/l2/scale"] == pytest.approx(L2_SCALE)
  assert hparams["reg/l2/type"] == "L2"
  assert hparams["reg/proximal_l1/scale"] == pytest.approx(0.1)
  assert hparams["label_noise"] == pytest.approx(0.1)
  assert hparams["learning_rate"] == pytest.approx(3e-3)
  assert (hparams["optimizer"], hparams["model"], hparams["lr_schedule"]) == ("Adam", "mlp", "WarmupCosine")
  assert hparams["batch_size"] == 64 and hparams["regularizers"] == "l2,proximal_l1"


def test_distance_from_init_survives_resume(run, tmp_path):
  """The initial weights are checkpointed: a resumed run reports what the uninterrupted one did."""
  _, model_dir = run
  train_in_process(str(tmp_path), BINDINGS + ["Trainer.train_steps=100"])
  train_in_process(str(tmp_path), BINDINGS)
  straight, resumed = read_scalars(f"{model_dir}/train"), read_scalars(f"{tmp_path}/train")
  (steps, expected), (resumed_steps, got) = (zip(*run["norms/distance_from_init"])
                                              for run in (straight, resumed))
  assert resumed_steps == steps
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_metrics_under_mirrored_strategy_match_a_single_device(run, tmp_path):
  _, model_dir = run
  train_in_process(str(tmp_path), BINDINGS, strategy=mirrored(2))
  for event_dir in ("train", "eval"):
    single, multi = read_scalars(f"{model_dir}/{event_dir}"), read_scalars(f"{tmp_path}/{event_dir}")
    tags = [tag for tag in single if tag.startswith(MONITOR_PREFIXES)]
    assert tags
    for tag in tags:
      assert [s for s, _ in multi[tag]] == [s for s, _ in single[tag]], tag
      # Power iteration stops at a 1e-3 relative tolerance, so the eigenvalue agrees to about that.
      rtol = 3e-3 if tag.startswith("sharpness/hessian") else 1e-4
      np.testing.assert_allclose([v for _, v in multi[tag]], [v for _, v in single[tag]],
                                 rtol=rtol, atol=1e-6, err_msg=tag)


def _tiny_hessian(params, x, labels) -> np.ndarray:
  """The explicit Hessian of the mean data loss over all parameters, flattened in order (float64)."""
  shapes = [p.shape for p in params]
  flat = tf.constant(np.concatenate([p.ravel() for p in params]))
  with tf.GradientTape() as outer:
    outer.watch(flat)
    with tf.GradientTape() as inner:
      inner.watch(flat)
      pieces = [tf.reshape(p, s) for p, s in zip(tf.split(flat, [int(np.prod(s)) for s in shapes]), shapes)]
      hidden = tf.nn.relu(tf.constant(x.reshape(len(x), -1), tf.float64) @ pieces[0] + pieces[1])
      logits = hidden @ pieces[2] + pieces[3]
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    gradient = inner.gradient(loss, flat)
  hessian = outer.jacobian(gradient, flat).numpy()
  return 0.5 * (hessian + hessian.T)


def test_sharpness_matches_explicit_hessian_and_numpy_sam(tmp_path):
  """A 64-4-10 MLP (310 parameters), probes at step 100 on the first 64 train examples."""
  bindings = FAST + ["Trainer.train_steps=100", "MLP.hidden_sizes=(4,)", "Monitor.sharpness_every=100",
                     "Monitor.sharpness_examples=64", "Monitor.hessian_iterations=500",
                     "Monitor.hessian_tolerance=1e-7", "Monitor.sam_rho=0.05"]
  trainer, _ = train_in_process(str(tmp_path), bindings)
  scalars = read_scalars(f"{tmp_path}/train")
  params = _params(trainer)
  x, labels = trainer.splits.train.features[:64], trainer.splits.train.labels[:64]

  eigenvalues = np.linalg.eigvalsh(_tiny_hessian(params, x, labels))
  top = eigenvalues[np.argmax(np.abs(eigenvalues))]
  assert _last(scalars, "sharpness/hessian_top_eigenvalue") == (100, pytest.approx(top, rel=1e-3))
  assert 2 <= _last(scalars, "sharpness/hessian_iterations")[1] < 500

  loss, gradients = _loss_and_gradients(params, x, labels)
  plain = [0.05 * g / _flat_norm(gradients) for g in gradients]
  scaled_norm = _flat_norm([np.abs(w) * g for w, g in zip(params, gradients)])
  magnitude_aware = [0.05 * w * w * g / scaled_norm for w, g in zip(params, gradients)]
  for tag, step in (("sharpness/sam", plain), ("sharpness/sam_magnitude_aware", magnitude_aware)):
    perturbed, _ = _loss_and_gradients([w + e for w, e in zip(params, step)], x, labels)
    assert _last(scalars, tag) == (100, pytest.approx(perturbed - loss, rel=1e-3, abs=2e-6)), tag


@pytest.mark.parametrize("binding", ["Monitor.near_zero_threshold=-1.0", "Monitor.sharpness_every=-5",
                                     "Monitor.sharpness_examples=0", "Monitor.hessian_iterations=0",
                                     "Monitor.train_eval_examples=1.5"])
def test_invalid_monitor_settings_are_rejected_before_training(binding, tmp_path):
  with pytest.raises(ValueError, match="Monitor"):
    train_in_process(str(tmp_path), FAST + [binding])


@pytest.mark.slow
def test_probes_on_two_replicas_with_padded_shares_match_numpy(tmp_path):
  """The Monitor inside `strategy.run` on 2 replicas: odd probe sizes (25 and 31 examples), so one
  replica's share is padded with a weight-0 row; each replica evaluates its share, the sums are
  all-reduced. References: float64 numpy from the final weights, an explicit Hessian for the top
  eigenvalue (a 64-4-10 MLP, 310 parameters)."""
  bindings = FAST + ["Trainer.train_steps=100", "MLP.hidden_sizes=(4,)", "Monitor.sharpness_every=100",
                     "Monitor.sharpness_examples=25", "Monitor.train_eval_examples=31",
                     "Monitor.hessian_iterations=500", "Monitor.hessian_tolerance=1e-7"]
  trainer, _ = train_in_process(str(tmp_path), bindings, strategy=mirrored(2))
  train_scalars, eval_scalars = read_scalars(f"{tmp_path}/train"), read_scalars(f"{tmp_path}/eval")
  params = _params(trainer)
  train = trainer.splits.train
  x, labels = train.features[:25], train.labels[:25]

  loss, gradients = _loss_and_gradients(params, x, labels)
  objective_gradients = [g + 2 * L2_SCALE * p if index % 2 == 0 else g
                         for index, (g, p) in enumerate(zip(gradients, params))]
  assert _last(train_scalars, "norms/grad_l2") == (100, pytest.approx(_flat_norm(objective_gradients),
                                                                       rel=1e-4))
  logits = _forward(params, train.features[:31])[-1]
  expected = {"train_eval/loss": float(_cross_entropy(logits, train.labels[:31])[0].mean()),
              "train_eval/accuracy": float(np.mean(logits.argmax(axis=1) == train.labels[:31]))}
  for tag, value in expected.items():
    assert _last(eval_scalars, tag) == (100, pytest.approx(value, rel=1e-4, abs=1e-6)), tag

  eigenvalues = np.linalg.eigvalsh(_tiny_hessian(params, x, labels))
  top = eigenvalues[np.argmax(np.abs(eigenvalues))]
  assert _last(train_scalars, "sharpness/hessian_top_eigenvalue") == (100, pytest.approx(top, rel=1e-3))
  plain = [0.05 * g / _flat_norm(gradients) for g in gradients]
  perturbed, _ = _loss_and_gradients([w + e for w, e in zip(params, plain)], x, labels)
  assert _last(train_scalars, "sharpness/sam") == (100, pytest.approx(perturbed - loss, rel=1e-3, abs=2e-6))
