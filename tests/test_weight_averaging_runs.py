"""Weight averages inside a run: SWA's BatchNorm statistics see the features the train step sees
(`normalize_on_device` included), `occam-evaluate --weights` refuses an average that holds nothing, an
average named like a run directory is refused, and evaluating an average puts back each replica's own
BatchNorm statistics."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import Splits
from trainer.data.arrays import ArrayData
from trainer.data.preprocessing import ImagePreprocessing
from trainer.loop import builder
from trainer.loop.settings import Trainer
from trainer.regularization import averaging

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
RNG = np.random.default_rng(0)
IMAGES = ArrayData(features=RNG.integers(0, 256, size=(32, 4, 4, 3), dtype=np.uint8),
                   labels=RNG.integers(0, 10, size=32).astype(np.int32))


def _images() -> Splits:
  return Splits(name="images", train=IMAGES, validation=IMAGES, test=IMAGES, num_classes=10,
                description="32 random 4x4 uint8 images")


def _batch_norm_model(input_shape, num_outputs) -> tf.keras.Model:
  return tf.keras.Sequential([tf.keras.Input(input_shape), tf.keras.layers.BatchNormalization(),
                              tf.keras.layers.Flatten(), tf.keras.layers.Dense(num_outputs)])


def _swa_statistics(tmp_path, on_device: bool) -> np.ndarray:
  settings = Trainer(model=_batch_norm_model, data=_images, optimizer=tf.keras.optimizers.SGD,
                     preprocessing=ImagePreprocessing(mean=MEAN, std=STD, normalize_on_device=on_device),
                     regularizers=[averaging.SWA(statistics_batches=2)], batch_size=8, jit_compile=False)
  run = builder.build(settings, strategy=tf.distribute.get_strategy(), model_dir=str(tmp_path / "run"))
  state, = run.averages
  tf.function(lambda: state.update(tf.constant(0, tf.int64)))()  # one snapshot: the initial weights
  with state.swapped_in():
    return averaging.batch_norm_layers(run.model)[0].moving_mean.numpy()


def test_swa_statistics_are_computed_on_normalized_features_when_images_normalize_on_the_device(tmp_path):
  host = _swa_statistics(tmp_path, on_device=False)
  device = _swa_statistics(tmp_path, on_device=True)
  assert np.all(np.abs(host) < 3)  # normalized pixels: a mean of a few units at most, not ~128
  np.testing.assert_allclose(device, host, rtol=0, atol=1e-5)  # the device's normalization, within ulps


def test_evaluating_an_average_that_holds_no_weights_yet_is_refused_with_exit_2(tmp_path, capsys):
  """SWA before its first snapshot holds the initial weights: `--weights=swa` must not report them."""
  from tests.helpers import FAST, train_in_process
  from trainer import evaluation
  model_dir = str(tmp_path / "run")
  train_in_process(model_dir, FAST + ["Trainer.train_steps=50", "Trainer.regularizers=[@SWA()]",
                                      "SWA.start_step=100"])
  assert evaluation.main(["--model_dir", model_dir, "--weights", "swa"]) == 2
  error = capsys.readouterr().err
  assert "--weights='swa'" in error and "no averaged weights yet" in error


def test_a_weight_average_named_like_a_directory_of_the_run_is_refused_before_anything_is_written(
    tmp_path, capsys):
  """`EMA(name='best')` would export into early stopping's `best/` and report `best/test/*` twice."""
  from tests.helpers import run_main, short_run_args
  from trainer import main
  for name in ("best", "checkpoints", "a/b", "..", ""):
    with pytest.raises(ValueError, match="name="):
      averaging.EMA(name=name)
  averaging.SWA(name="swa-late_2.0")  # a plain directory name is fine
  model_dir = tmp_path / "run"
  code = run_main(short_run_args(model_dir, extra=["Trainer.regularizers=[@EMA()]", "EMA.name='best'"]))
  assert code == main.EXIT_BAD_INPUT
  assert "EMA.name='best'" in capsys.readouterr().err
  assert not model_dir.exists()


def test_evaluating_an_average_puts_back_each_replicas_own_batch_norm_statistics():
  """Under a MirroredStrategy each replica's moving statistics follow its own batches; swapping an
  average in and out must leave every replica's copy as it was, not one value copied to all."""
  from tests.conftest import mirrored
  from trainer.runtime import compat
  strategy = mirrored(2)
  with strategy.scope():
    model = tf.keras.Sequential([tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(2)])
    model.build((None, 3))
    states = [averaging.EMA(statistics="raw").create_state(model),
              averaging.SWA().create_state(model, statistics_batches=lambda: iter([(tf.ones((4, 3)), None)]))]
  batches = strategy.experimental_distribute_values_from_function(  # replica r's batch is all r + 1
      lambda context: tf.fill([4, 3], float(context.replica_id_in_sync_group + 1)))
  tf.function(lambda x: strategy.run(lambda x: model(x, training=True), args=(x,)))(batches)
  copies = strategy.experimental_local_results(compat.tf_variable(averaging.batch_norm_layers(model)[0]
                                                                  .moving_mean))
  before = [copy.numpy() for copy in copies]
  assert not np.array_equal(before[0], before[1])  # the replicas' statistics differ
  for state in states:
    with state.swapped_in():
      pass
    for copy, value in zip(copies, before):
      np.testing.assert_array_equal(copy.numpy(), value)
