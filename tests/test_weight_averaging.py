"""Weight averaging (`EMA`, `SWA`): the update against numpy and tensorflow-addons, BatchNorm statistics
against torch's `update_bn` definition, under a 2-replica MirroredStrategy, exact resume, and the
averages' evaluation and export read back from a real run's event files and SavedModel."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from tests.helpers import FAST, checkpoint_values, model_weights, read_scalars, train_in_process
from tests.test_tfa import requires_tfa
from trainer.data import digits
from trainer.metrics import tags
from trainer.regularization import averaging, terms

# float32 arithmetic in the same order as the numpy reference; a few roundings apart over the steps on
# weights of order 1 (float32's spacing there is 1.2e-7).
RTOL, ATOL = 1e-6, 1e-6
STEPS = 12


def _model() -> tf.keras.Model:
  model = tf.keras.Sequential([tf.keras.layers.Dense(4, activation="relu"), tf.keras.layers.Dense(3)])
  model.build((None, 5))
  return model


def _trajectory(model, steps: int) -> list[list[np.ndarray]]:
  """`steps` sets of weights (the initial ones first) drawn around the model's own."""
  rng = np.random.default_rng(0)
  start = [v.numpy() for v in model.trainable_variables]
  return [start] + [[(w + rng.normal(size=w.shape)).astype(np.float32) for w in start]
                    for _ in range(steps)]


def _numpy_ema(trajectory, decay: float, *, warmup: bool = False):
  average = [w.copy() for w in trajectory[0]]
  for step, weights in enumerate(trajectory[1:]):
    rate = np.float32(decay)
    if warmup:
      rate = min(rate, np.float32(1 + step) / np.float32(10 + step))
    average = [a - (a - w) * (np.float32(1) - rate) for a, w in zip(average, weights)]
  return average


def _numpy_swa(trajectory, start_step: int, every: int):
  snapshots = [weights for step, weights in enumerate(trajectory) if step >= start_step
               and (step - start_step) % every == 0]
  return [np.mean(np.stack(parts), axis=0) for parts in zip(*snapshots)], len(snapshots)


def _follow(spec, trajectory, strategy) -> averaging.AveragedWeights:
  """The state of `spec` after the model passed through `trajectory[1:]`, updated in replica context."""
  with strategy.scope():
    model = _model()
    for variable, value in zip(model.trainable_variables, trajectory[0]):
      variable.assign(value)
    state = spec.create_state(model)

  @tf.function
  def update(step):
    strategy.run(state.update, args=(step,))

  for step, weights in enumerate(trajectory[1:]):
    for variable, value in zip(model.trainable_variables, weights):
      variable.assign(value)
    update(tf.constant(step, tf.int64))
  return state


def _assert_averages(state, expected, strategy):
  for average, reference in zip(state.averages, expected):
    for component in strategy.experimental_local_results(average):  # every replica's copy
      np.testing.assert_allclose(component.numpy(), reference, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("warmup", [False, True])
def test_ema_follows_the_numpy_reference(replicas, warmup):
  strategy = mirrored(2) if replicas == 2 else tf.distribute.get_strategy()
  trajectory = _trajectory(_model(), STEPS)
  state = _follow(averaging.EMA(0.9, warmup=warmup), trajectory, strategy)
  _assert_averages(state, _numpy_ema(trajectory, 0.9, warmup=warmup), strategy)
  assert float(state.count.numpy()) == STEPS


@pytest.mark.parametrize("replicas", [1, 2])
def test_swa_is_the_running_mean_of_the_snapshots_from_start_step_every_steps(replicas):
  strategy = mirrored(2) if replicas == 2 else tf.distribute.get_strategy()
  trajectory = _trajectory(_model(), STEPS)
  state = _follow(averaging.SWA(start_step=4, every=3), trajectory, strategy)
  expected, snapshots = _numpy_swa(trajectory, 4, 3)  # steps 4, 7, 10
  assert snapshots == 3 and float(state.count.numpy()) == snapshots
  _assert_averages(state, expected, strategy)


def test_swa_before_its_first_snapshot_has_nothing_to_evaluate():
  state = _follow(averaging.SWA(start_step=STEPS + 1), _trajectory(_model(), STEPS),
                  tf.distribute.get_strategy())
  assert not state.ready


def test_swa_recomputes_batch_norm_statistics_as_the_mean_of_batch_statistics():
  """torch's update_bn: the statistics of the average are the mean over the batches of each batch's."""
  model = tf.keras.Sequential([tf.keras.layers.BatchNormalization(momentum=0.5), tf.keras.layers.Dense(2)])
  model.build((None, 3))
  batches = [(np.random.default_rng(i).normal(i, 1 + i, size=(8, 3)).astype(np.float32), np.zeros(8))
             for i in range(3)]
  state = averaging.SWA().create_state(model, statistics_batches=lambda: iter(batches))
  before = [v.numpy().copy() for v in model.variables]
  with state.swapped_in():
    bn = model.layers[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([x.mean(0) for x, _ in batches], 0),
                               rtol=1e-5)
    variances = [x.var(0) for x, _ in batches]  # both Kerases store the biased batch variance
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean(variances, 0), rtol=1e-5)
    assert bn.momentum == 0.5  # put back already
  for value, variable in zip(before, model.variables):  # the raw model comes back bit for bit
    np.testing.assert_array_equal(variable.numpy(), value)


def test_ema_averages_batch_norm_statistics_as_timm_or_only_the_trainables_as_tfa():
  model = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization(),
                               tf.keras.layers.Dropout(0.5), tf.keras.layers.Dense(2)])
  model.build((None, 3))
  bn = model.layers[1]
  averaged = averaging.EMA(statistics="averaged").create_state(model)
  raw = averaging.EMA(statistics="raw").create_state(model)
  assert len(raw.averages) == len(model.trainable_variables)
  assert len(averaged.averages) == len(model.trainable_variables) + 2  # the moving statistics; no RNG state
  bn.moving_mean.assign(tf.ones_like(bn.moving_mean))
  tf.function(lambda: (averaged.update(tf.constant(0, tf.int64)), raw.update(tf.constant(0, tf.int64))))()
  with averaged.swapped_in():  # (1 - decay) of the way from the initial zeros to the ones
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.float32(1) - np.float32(0.999), rtol=1e-6)
  with raw.swapped_in():  # the raw model's own statistics
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 1.0)


def test_the_roles_and_the_specs_reject_bad_settings():
  ema, swa = averaging.EMA(0.9), averaging.SWA(5, 2)
  assert terms.by_role([ema, swa]).weight_averages == (ema, swa)
  with pytest.raises(ValueError, match="distinct names"):
    terms.by_role([averaging.EMA(), averaging.EMA(0.5)])
  with pytest.raises(ValueError, match="decay must be < 1"):
    averaging.EMA(1.0)
  with pytest.raises(ValueError, match="start_step"):
    averaging.SWA(0)
  with pytest.raises(ValueError, match="statistics"):
    averaging.EMA(statistics="both")
  assert ema.hparams() == {"type": "EMA", "decay": 0.9, "warmup": False, "statistics": "averaged"}


def _loss_scaled_step(initial_scale: float, strategy) -> tuple[list, list, list]:
  """One real train step under mixed_float16 with a real LossScaleOptimizer starting at `initial_scale`,
  EMA(0.5) and SWA(start_step=1) beside it: (weights before, weights after, the two averages' states)."""
  from models import MLP
  from trainer.loop import losses, schedules
  from trainer.loop.programs import TrainProgram
  from trainer.runtime import compat
  loss_scale_optimizer = (tf.keras.optimizers.LossScaleOptimizer if compat.IS_KERAS_3
                          else tf.keras.mixed_precision.LossScaleOptimizer)  # Keras 2 (tfa lane)
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    with strategy.scope():
      model = MLP(hidden_sizes=(8,))
      model(tf.zeros((1, 8, 8, 1)))
      schedule = schedules.Scaled(schedules.Constant(0.1))
      optimizer = loss_scale_optimizer(tf.keras.optimizers.SGD(learning_rate=schedule),
                                       initial_scale=initial_scale)
      compat.build_optimizer(optimizer, model.trainable_variables)
      states = [averaging.EMA(0.5).create_state(model), averaging.SWA(start_step=1).create_state(model)]
    program = TrainProgram(strategy=strategy, model=model, optimizer=optimizer, schedule=schedule,
                           loss_fn=losses.softmax_cross_entropy, global_batch_size=8,
                           terms=terms.by_role([]), include_model_losses=False, classification=True,
                           step=tf.Variable(0, dtype=tf.int64), seed=0, averages=states)
    train = digits().train
    batches = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((train.features[:8], train.labels[:8])).repeat()))
    before = [v.numpy() for v in model.trainable_variables]
    assert int(program.loop(batches, tf.constant(1))) == -1 and program.guarded == ["data loss"]
    return before, [v.numpy() for v in model.trainable_variables], states
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("replicas", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_step_skipped_by_loss_scaling_is_skipped_by_the_averages_and_a_taken_one_is_not(replicas):
  """mixed_float16: a loss scale of 2^60 overflows float16 at once, so the LossScaleOptimizer skips the
  step; the averages skip it too (unchanged bit for bit, no count, no SWA snapshot). At a scale of 1
  the same step is taken, and the averages take it: EMA(0.5) is the mean of the weights before and
  after, SWA's first snapshot the weights after."""
  strategy = tf.distribute.get_strategy() if replicas == 1 else mirrored(replicas)
  before, after, (ema, swa) = _loss_scaled_step(2.0**60, strategy)
  for old, new in zip(before, after):
    np.testing.assert_array_equal(new, old)  # the optimizer skipped the step
  for state in (ema, swa):
    assert float(state.count.numpy()) == 0
    for average, old in zip(state.averages, before):
      for component in strategy.experimental_local_results(average):
        np.testing.assert_array_equal(component.numpy(), old)
  before, after, (ema, swa) = _loss_scaled_step(1.0, strategy)
  assert any(not np.array_equal(new, old) for old, new in zip(before, after))  # the step was taken
  assert float(ema.count.numpy()) == 1 and float(swa.count.numpy()) == 1
  _assert_averages(ema, [old - (old - new) * np.float32(0.5) for old, new in zip(before, after)], strategy)
  _assert_averages(swa, after, strategy)


# End to end: the quickstart MLP on the bundled digits, 200 steps, evaluated at 100 and 200.
AVERAGES = ["Trainer.regularizers=[@L2(), @EMA(), @SWA()]", "EMA.decay=0.9", "SWA.start_step=150",
            "SWA.every=10"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(straight run, its model_dir), a run interrupted at step 100 and resumed, and one without averages."""
  root = tmp_path_factory.mktemp("averaging")
  straight = train_in_process(str(root / "straight"), FAST + AVERAGES)
  train_in_process(str(root / "resumed"), FAST + AVERAGES + ["Trainer.train_steps=100"])
  resumed = train_in_process(str(root / "resumed"), FAST + AVERAGES)
  plain = train_in_process(str(root / "plain"), FAST)
  return {"straight": (straight, str(root / "straight")), "resumed": (resumed, str(root / "resumed")),
          "plain": plain}


@pytest.mark.slow
def test_averaging_leaves_the_trajectory_alone(runs):
  (run, _), _ = runs["straight"]
  plain_run, _ = runs["plain"]
  raw = [(name, value) for name, value in model_weights(run)]
  assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(raw, model_weights(plain_run)))


@pytest.mark.slow
def test_a_resumed_run_continues_the_averages_bit_for_bit(runs):
  (_, straight_dir), (_, resumed_dir) = runs["straight"], runs["resumed"]
  straight, resumed = checkpoint_values(straight_dir), checkpoint_values(resumed_dir)
  assert any(key.startswith("averages/ema/") for key in straight)
  assert straight.keys() == resumed.keys()
  for key, value in straight.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)
  for directory in ("eval_ema", "eval_swa"):  # (the first leg also wrote its own test/* at step 100)
    expected = read_scalars(os.path.join(straight_dir, directory))
    got = read_scalars(os.path.join(resumed_dir, directory))
    for tag, points in expected.items():
      steps = {step for step, _ in points}
      assert [point for point in got[tag] if point[0] in steps] == points, tag


@pytest.mark.slow
def test_the_averages_are_evaluated_into_their_own_runs_and_exported(runs):
  (run, metrics), model_dir = runs["straight"]
  ema, swa = (read_scalars(os.path.join(model_dir, tags.averaged_directory(name))) for name in ("ema", "swa"))
  assert set(ema) == set(tags.averaged_tags()) == set(swa)  # eval/*, train_eval/*, gap/*, test/*
  assert [step for step, _ in ema["eval/accuracy"]] == [100, 200]
  assert [step for step, _ in swa["eval/accuracy"]] == [200]  # no snapshot before step 150
  assert metrics["ema/test/accuracy"] == pytest.approx(ema["test/accuracy"][-1][1])
  assert metrics["swa/eval/accuracy"] == pytest.approx(swa["eval/accuracy"][-1][1])
  # The export carries the EMA weights: its test accuracy is the averaged run's, not the raw weights'.
  state = run.averages[0]
  test = digits().test
  exported = tf.saved_model.load(os.path.join(model_dir, "ema", "saved_model"))  # kept: owns its variables
  outputs = exported.serve(tf.constant(test.features, tf.float32))["outputs"].numpy()
  assert np.mean(outputs.argmax(-1) == test.labels) == pytest.approx(metrics["ema/test/accuracy"], abs=1e-6)
  with state.swapped_in():
    np.testing.assert_allclose(run.model(test.features, training=False).numpy(), outputs,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_averages_under_a_mirrored_strategy_match_a_single_device(runs, tmp_path):
  _, straight_dir = runs["straight"]
  train_in_process(str(tmp_path), FAST + AVERAGES, strategy=mirrored(2))
  single, replicated = checkpoint_values(straight_dir), checkpoint_values(str(tmp_path))
  averaged = [key for key in single if key.startswith("averages/")]
  assert averaged
  for key in averaged:  # the raw trajectories differ by float reassociation of the all-reduce only
    np.testing.assert_allclose(replicated[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)


def _tfa_trajectory(wrapper, state_spec, steps: int):
  """Trains one model with `wrapper(SGD)` (tfa) and a copy with SGD plus Occam's state of `state_spec`,
  on the same digits batches; returns (tfa's average slots, Occam's averages)."""
  from tests.test_tfa import _batches
  from tests.test_tfa import _model as tfa_model
  leader = tfa_model()
  follower = tfa_model(leader.get_weights())
  tfa_optimizer = wrapper(tf.keras.optimizers.legacy.SGD(0.1))
  sgd = tf.keras.optimizers.legacy.SGD(0.1)
  state = state_spec.create_state(follower)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  for step, (features, labels) in enumerate(_batches(steps)):
    for model, optimizer in ((leader, tfa_optimizer), (follower, sgd)):
      with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(features))
      gradients = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    state.update(tf.constant(step, tf.int64))
  return [tfa_optimizer.get_slot(v, "average").numpy() for v in leader.trainable_variables], state


@requires_tfa
@pytest.mark.parametrize("warmup", [False, True])
def test_ema_follows_tfa_moving_average(warmup):
  import tensorflow_addons as tfa
  expected, state = _tfa_trajectory(
      lambda sgd: tfa.optimizers.MovingAverage(sgd, average_decay=0.9, dynamic_decay=warmup),
      averaging.EMA(0.9, warmup=warmup, statistics="raw"), 30)
  for got, reference in zip(state.averages, expected):  # measured bit-identical (TF 2.15, CPU)
    np.testing.assert_allclose(got.numpy(), reference, rtol=1e-6, atol=1e-7)


@requires_tfa
def test_swa_follows_tfa_swa():
  import tensorflow_addons as tfa
  expected, state = _tfa_trajectory(
      lambda sgd: tfa.optimizers.SWA(sgd, start_averaging=5, average_period=4),
      averaging.SWA(start_step=6, every=4), 30)  # tfa counts the iterations before the step
  assert float(state.count.numpy()) == 7  # steps 6, 10, ..., 30
  for got, reference in zip(state.averages, expected):  # measured bit-identical (TF 2.15, CPU)
    np.testing.assert_allclose(got.numpy(), reference, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_the_evaluate_entry_point_evaluates_an_average_of_the_latest_checkpoint(runs):
  import trainer
  (_, metrics), model_dir = runs["straight"]
  result = trainer.evaluate(model_dir, split="test", weights="ema")
  assert result.step == 200
  assert result.metrics["ema/test/accuracy"] == pytest.approx(metrics["ema/test/accuracy"], abs=1e-6)
  with pytest.raises(trainer.InvalidRunError, match="latest checkpoint only"):
    trainer.evaluate(model_dir, checkpoint="best", weights="ema")


def test_finish_reevaluates_the_average_when_the_last_evaluation_was_before_the_final_step(tmp_path):
  """`finish` reuses the last `eval/*` of the average only if it was taken at the final step."""
  from trainer.loop.averaged_evaluation import EvaluateAverage
  from trainer.metrics.summaries import SummaryWriters
  state = _follow(averaging.EMA(decay=0.5), _trajectory(_model(), 3), tf.distribute.get_strategy())
  calls = []

  def evaluate(splits):
    calls.append(tuple(splits))
    return {f"{split}/calls": float(len(calls)) for split in splits}

  action = EvaluateAverage(state, evaluate=evaluate, writers=SummaryWriters(str(tmp_path), enabled=False),
                           model_dir=str(tmp_path), feature_shape=(5,), is_chief=False)
  action(5, {})
  assert action.finish(5)["ema/eval/calls"] == 1.0 and calls == [("eval",), ("test",)]  # reused
  calls.clear()
  action(5, {})
  assert action.finish(7)["ema/eval/calls"] == 2.0 and calls == [("eval",), ("eval",), ("test",)]


def test_averaged_batch_norm_statistics_agree_on_every_replica_and_survive_a_checkpoint(tmp_path):
  """Each replica's BatchNorm statistics differ; their average is updated from the mean over replicas,
  so every replica's copy holds the checkpointed (first replica's) value."""
  from trainer.runtime import compat
  strategy = mirrored(2)
  with strategy.scope():
    model = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization()])
    model.build((None, 3))
    state = averaging.EMA(decay=0.5, statistics="averaged").create_state(model)
  bn = model.layers[1]
  for value, copy in enumerate(strategy.experimental_local_results(compat.tf_variable(bn.moving_mean))):
    copy.assign(tf.fill(copy.shape, float(value + 1)))  # replica 0: ones, replica 1: twos
  tf.function(lambda: strategy.run(state.update, args=(tf.constant(0, tf.int64),)))()
  for average in state.averages:
    first, second = (copy.numpy() for copy in strategy.experimental_local_results(average))
    np.testing.assert_array_equal(first, second)
  mean_average = state.averages[-2]  # the moving mean: halfway from zeros to the replicas' mean 1.5
  np.testing.assert_allclose(strategy.experimental_local_results(mean_average)[1].numpy(), 0.75, rtol=1e-6)
  path = tf.train.Checkpoint(average=state.trackable).save(str(tmp_path / "ckpt"))
  saved = [[copy.numpy() for copy in strategy.experimental_local_results(a)] for a in state.averages]
  for average in state.averages:
    average.assign(tf.zeros_like(average))
  tf.train.Checkpoint(average=state.trackable).restore(path).assert_consumed()
  for average, values in zip(state.averages, saved):
    for copy, value in zip(strategy.experimental_local_results(average), values):
      np.testing.assert_array_equal(copy.numpy(), value)
