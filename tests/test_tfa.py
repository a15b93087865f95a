"""The tensorflow-addons lane: tfa optimizers from gin, step-for-step parity with Occam's decay.

Most tests need tensorflow-addons, which imports only with TF <= 2.15 (Keras 2): they run in the
tfa lane (`make test-tfa`) and are skipped on the main lane. The last test runs on the main lane
only: there, asking gin for a tfa optimizer is an error that says how to install the lane.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import trainer
from tests.conftest import mirrored
from tests.helpers import FAST, QUICKSTART, train_in_process
from trainer.config import parsing as config
from trainer.data import digits
from trainer.loop import builder, schedules
from trainer.loop.settings import Trainer
from trainer.regularization import terms as regularizers
from trainer.regularization import tfa_optimizers
from trainer.runtime import compat

_skip_without_tfa = pytest.mark.skipif(
    not tfa_optimizers.available(),
    reason="tensorflow-addons 0.23 imports only with TF <= 2.15; run in the tfa lane (make test-tfa)")


def requires_tfa(test):
  """Marks `test` as a tfa-lane test (`-m tfa`) and skips it where tensorflow-addons does not import."""
  return pytest.mark.tfa(_skip_without_tfa(test))

WEIGHT_DECAY = 1e-3
STEPS = 100


def _batches(num_steps: int, batch_size: int = 64):
  """`num_steps` real digits training batches (flattened 8x8 images) in a fixed shuffled order."""
  train = digits().train
  order = np.random.default_rng(0).permutation(len(train.labels))
  for step in range(num_steps):
    rows = order[np.arange(step * batch_size, (step + 1) * batch_size) % len(order)]
    yield (tf.constant(train.features[rows].reshape(batch_size, -1), tf.float32),
           tf.constant(train.labels[rows]))


def _model(weights=None) -> tf.keras.Model:
  """A small MLP with biases: 64 -> 32 -> 10."""
  model = tf.keras.Sequential([tf.keras.layers.Dense(32, activation="relu"), tf.keras.layers.Dense(10)])
  model.build((None, 64))
  if weights is not None:
    model.set_weights(weights)
  return model


def _train_side_by_side(leader: tf.keras.Model, updates: list, batches) -> None:
  """Per batch: real gradients of `leader`, then each of `updates` applies them to its model.

  Every optimizer sees the same gradients, so the comparison isolates the update rule. (Trained
  separately, two trajectories drift apart by up to ~lr at coordinates whose gradient is near zero:
  Adam normalizes it, and one rounding difference flips its sign.)
  """

  @tf.function
  def step(features, labels):
    with tf.GradientTape() as tape:
      logits = leader(features, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    gradients = tape.gradient(loss, leader.trainable_variables)
    for update in updates:
      update(gradients)

  for features, labels in batches:
    step(features, labels)


@requires_tfa
@pytest.mark.parametrize("optimizer_name", ["Adam", "SGD"])
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant_lr", "warmup_cosine"])
@pytest.mark.parametrize("keras_optimizers, tolerance", [
    # tfa extends Keras 2's legacy optimizers: the same base step isolates the decay.
    ("legacy", 1e-6),
    # Keras 2's new optimizers (`@Adam`, `@SGD` in gin on TF 2.15) compute the base step in other
    # ops than the legacy fused kernels; the weights differ by float32 rounding (about 1e-6 after
    # 100 steps without any decay), hence a looser bound.
    ("new", 1e-5),
])
def test_schedule_multiplier_decay_equals_tfa_step_for_step(optimizer_name, scheduled, keras_optimizers,
                                                            tolerance):
  """Keras 2 Adam / SGD(momentum) + DecoupledWeightDecay('schedule_multiplier') == tfa AdamW / SGDW.

  100 steps, biases excluded on both sides. With a schedule, tfa's weight_decay is scheduled by
  hand as its docs say: `wd * lr_t / lr_0`.
  """
  tfa = tfa_optimizers.import_tfa()
  base = 1e-3 if optimizer_name == "Adam" else 0.05
  schedule = (schedules.WarmupCosine(base_learning_rate=base, warmup_steps=20, decay_steps=STEPS)
              if scheduled else schedules.Constant(base))
  keras_module = tf.keras.optimizers.legacy if keras_optimizers == "legacy" else tf.keras.optimizers
  keras_class = getattr(keras_module, optimizer_name)
  extra = {"momentum": 0.9} if optimizer_name == "SGD" else {}
  initial = _model().get_weights()
  occam_model, tfa_model, undecayed_model = _model(initial), _model(initial), _model(initial)

  occam_optimizer = keras_class(learning_rate=schedule, **extra)
  decay = regularizers.DecoupledWeightDecay(WEIGHT_DECAY, convention="schedule_multiplier")
  decay.bind(occam_model)
  assert [s.path for s in decay.selected] == [compat.variable_path(v) for v in occam_model.trainable_variables
                                              if len(v.shape) == 2]

  def occam_update(gradients):  # as trainer/programs.py TrainProgram._apply
    decay.before_step(schedule(occam_optimizer.iterations), schedule.base_learning_rate)
    occam_optimizer.apply_gradients(zip(gradients, occam_model.trainable_variables))

  tfa_class = {"Adam": tfa.optimizers.AdamW, "SGD": tfa.optimizers.SGDW}[optimizer_name]
  weight_decay = ((lambda: WEIGHT_DECAY * schedule(tfa_optimizer.iterations) / base) if scheduled
                  else WEIGHT_DECAY)
  tfa_optimizer = tfa_class(weight_decay=weight_decay, learning_rate=schedule, **extra)
  kernels = [v for v in tfa_model.trainable_variables if len(v.shape) == 2]

  def tfa_update(gradients):
    tfa_optimizer.apply_gradients(zip(gradients, tfa_model.trainable_variables), decay_var_list=kernels)

  undecayed_optimizer = keras_class(learning_rate=schedule, **extra)

  def undecayed_update(gradients):
    undecayed_optimizer.apply_gradients(zip(gradients, undecayed_model.trainable_variables))

  for optimizer, model in ((occam_optimizer, occam_model), (undecayed_optimizer, undecayed_model)):
    compat.build_optimizer(optimizer, model.trainable_variables)
  _train_side_by_side(occam_model, [occam_update, tfa_update, undecayed_update], _batches(STEPS))
  occam, reference, undecayed = ([v.numpy() for v in m.trainable_variables]
                                 for m in (occam_model, tfa_model, undecayed_model))
  assert max(np.abs(a - b).max() for a, b in zip(undecayed, reference)) > 1e-4  # the decay matters
  assert max(np.abs(a - b).max() for a, b in zip(occam, reference)) <= tolerance
  for model in (occam_model, tfa_model):  # biases: same as without decay
    np.testing.assert_allclose(model.layers[0].bias.numpy(), undecayed_model.layers[0].bias.numpy(),
                               atol=1e-6)


def _tfa_bindings(weight_decay: float, learning_rate: float) -> list[str]:
  return FAST + ["Trainer.regularizers=[]", f"Trainer.learning_rate={learning_rate}",
                 "Trainer.optimizer=@tfa.optimizers.AdamW",
                 f"tfa.optimizers.AdamW.weight_decay={weight_decay}"]


@requires_tfa
@pytest.mark.parametrize("replicas", [1, 2])
def test_gin_tfa_adamw_decays_exactly_the_selected_variables(tmp_path, replicas):
  """At lr = 0 only tfa's decay moves the weights: kernels shrink by (1 - wd)^T, biases stay exact.

  Under MirroredStrategy plain tfa with an exclusion would decay nothing (see the next test); Occam
  lists the per-device components too, so the result is the same on 1 and 2 replicas.
  """
  strategy = mirrored(2) if replicas == 2 else None
  one_step, _ = train_in_process(str(tmp_path / "one"), _tfa_bindings(0.01, 0.0) + ["Trainer.train_steps=1"])
  after_one = [v.numpy() for v in one_step.model.trainable_variables]
  trainer, _ = train_in_process(str(tmp_path / "run"), _tfa_bindings(0.01, 0.0), strategy=strategy)
  steps = int(trainer.step.numpy())
  for variable, start in zip(trainer.model.trainable_variables, after_one):
    path = compat.variable_path(variable)
    for component in trainer.strategy.experimental_local_results(variable):
      if len(variable.shape) == 2:
        np.testing.assert_allclose(component.numpy(), start * 0.99 ** (steps - 1), rtol=1e-5, err_msg=path)
      else:
        np.testing.assert_array_equal(component.numpy(), start, err_msg=path)


@requires_tfa
def test_an_unbound_tfa_optimizer_names_the_function_that_binds_it():
  optimizer = tfa_optimizers.adamw(1e-3, weight_decay=1e-4)
  variable = tf.Variable([1.0])
  with pytest.raises(RuntimeError, match=r"call trainer\.regularization\.tfa_optimizers\.bind\(") as error:
    optimizer.apply_gradients([(tf.ones_like(variable), variable)])
  name = str(error.value).split("call ", 1)[1].split("(", 1)[0]
  module, function = name.rsplit(".", 1)
  assert callable(getattr(__import__(module, fromlist=[function]), function))


@requires_tfa
def test_plain_tfa_with_an_exclusion_decays_nothing_under_mirrored():
  """The defect Occam designs around (docs/REGULARIZATION.md, "tensorflow-addons under
  MirroredStrategy"): tfa's decay set holds the mirrored variables, its update sees their
  per-device components, so with `decay_var_list` nothing is decayed."""
  tfa = tfa_optimizers.import_tfa()
  strategy = mirrored(2)
  with strategy.scope():
    kernel = tf.Variable([[1.0]])
    optimizer = tfa.optimizers.SGDW(weight_decay=0.5, learning_rate=0.0)

  @tf.function
  def step():
    strategy.run(
        lambda: optimizer.apply_gradients([(tf.zeros_like(kernel), kernel)], decay_var_list=[kernel]))

  step()
  assert [c.numpy()[0, 0] for c in strategy.experimental_local_results(kernel)] == [1.0, 1.0]


@requires_tfa
def test_own_tfa_factory_with_exclusion_under_mirrored_is_refused(tmp_path):
  tfa = tfa_optimizers.import_tfa()

  def own_adamw(learning_rate):
    return tfa.optimizers.AdamW(weight_decay=1e-4, learning_rate=learning_rate,
                                exclude_from_weight_decay=["bias"])

  config.parse([QUICKSTART], FAST)
  strategy = mirrored(2)
  with pytest.raises(ValueError) as error, strategy.scope():
    builder.build(Trainer(optimizer=own_adamw), strategy=strategy, model_dir=str(tmp_path))
  message = str(error.value)
  for expected in ("decays none", "MirroredStrategy (2 replicas)", "dense_0/kernel",
                   "DecoupledWeightDecay", "schedule_multiplier", "@tfa.optimizers.AdamW"):
    assert expected in message, message


@requires_tfa
@pytest.mark.parametrize("tfa_optimizer, occam_optimizer", [
    (["Trainer.optimizer=@tfa.optimizers.SGDW", "tfa.optimizers.SGDW.momentum=0.9",
      "tfa.optimizers.SGDW.weight_decay=0.002"],
     ["Trainer.optimizer=@SGD", "SGD.momentum=0.9"]),
    (["Trainer.optimizer=@tfa.optimizers.extend_with_decoupled_weight_decay",
      "tfa.optimizers.extend_with_decoupled_weight_decay.base_optimizer='SGD'",
      "tfa.optimizers.extend_with_decoupled_weight_decay.momentum=0.9",
      "tfa.optimizers.extend_with_decoupled_weight_decay.nesterov=True",
      "tfa.optimizers.extend_with_decoupled_weight_decay.weight_decay=0.002"],
     ["Trainer.optimizer=@SGD", "SGD.momentum=0.9", "SGD.nesterov=True"]),
], ids=["SGDW", "extend_SGD_nesterov"])
def test_gin_tfa_optimizers_train_like_occam_decay_on_two_replicas(tmp_path, tfa_optimizer, occam_optimizer):
  """Through the whole Trainer on 2 replicas: tfa's decay == DecoupledWeightDecay('schedule_multiplier').

  SGD, not Adam: two Adam runs whose base steps differ in float32 rounding (tfa extends the legacy
  Adam, gin's `@Adam` is the new one) drift apart by up to ~lr per coordinate, because Adam turns a
  near-zero gradient into a full step whose sign rounding decides. (Adam's decay is checked exactly
  at lr = 0 above and step for step with shared gradients.)
  """
  common = FAST + ["Trainer.learning_rate=0.01"]
  tfa_run, tfa_results = train_in_process(
      str(tmp_path / "tfa"), common + ["Trainer.regularizers=[]"] + tfa_optimizer, strategy=mirrored(2))
  occam_run, _ = train_in_process(
      str(tmp_path / "occam"), common + occam_optimizer + [
          "Trainer.regularizers=[@DecoupledWeightDecay()]", "DecoupledWeightDecay.rate=0.002",
          "DecoupledWeightDecay.convention='schedule_multiplier'"], strategy=mirrored(2))
  assert tfa_results["test/accuracy"] > 0.9
  for a, b in zip(tfa_run.model.trainable_variables, occam_run.model.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=compat.variable_path(a))


@requires_tfa
def test_tfa_factory_instance_form_and_tfa_exclusion_list_are_refused(tmp_path):
  with pytest.raises(trainer.InvalidRunError,
                     match=r"bind it without parentheses, `Trainer.optimizer = @tfa.optimizers.AdamW`"):
    train_in_process(str(tmp_path), FAST + ["Trainer.optimizer=@tfa.optimizers.AdamW()",
                                            "tfa.optimizers.AdamW.weight_decay=1e-4"])
  with pytest.raises(ValueError, match=r"exclude_from_weight_decay is not supported.*VariableSelector"):
    tfa_optimizers.sgdw(0.1, weight_decay=1e-4, exclude_from_weight_decay=["bias"])
  with pytest.raises(ValueError, match=r"base_optimizer must be one of .*'Nadam'.*got 'Lion'"):
    tfa_optimizers.extend_with_decoupled_weight_decay(0.1, base_optimizer="Lion", weight_decay=1e-4)


@pytest.mark.skipif(tfa_optimizers.available(), reason="tensorflow-addons runs here (the tfa lane)")
def test_tfa_optimizer_on_the_main_lane_explains_how_to_install_the_lane():
  with pytest.raises(config.ConfigError) as error:
    config.parse([], ["Trainer.optimizer = @tfa.optimizers.AdamW"])
  message = str(error.value)
  for expected in ("tfa.optimizers.AdamW", "2.13-2.15", "make test-tfa",
                   ".[tfa]", "DecoupledWeightDecay(convention='schedule_multiplier')"):
    assert expected in message, message
  with pytest.raises(tfa_optimizers.TfaUnavailableError, match=r"cannot run on TensorFlow .*make test-tfa"):
    tfa_optimizers.import_tfa()
