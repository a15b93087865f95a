"""Early stopping: its decisions (counted evaluations, arguments, the metric it watches) and, in a real run,
the step it stops at, the best model it keeps and exports, and a rerun that trains no further."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import read_scalars, train_in_process
from trainer.loop.early_stopping import EarlyStopping


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


def test_early_stopping_stops_at_the_expected_step_and_exports_the_best_model(tmp_path):
  """The learning rate drops to 0 at step 60, so eval/loss stops improving; patience 2 at eval_every 20."""
  model_dir = str(tmp_path)
  bindings = ["Trainer.learning_rate=@Piecewise()", "Piecewise.base_learning_rate=3e-3",
              "Piecewise.boundaries=[60]", "Piecewise.multipliers=[0.0]", "Trainer.train_steps=400",
              "Trainer.steps_per_loop=20", "Trainer.eval_every=20", "Trainer.checkpoint_every=100",
              "Trainer.early_stopping=@EarlyStopping()", "EarlyStopping.metric='eval/loss'",
              "EarlyStopping.patience=2"]
  trainer, _ = train_in_process(model_dir, bindings)
  evals = read_scalars(os.path.join(model_dir, "eval"))["eval/loss"]
  best_step, best = None, np.inf
  for step, value in evals:  # independent bookkeeping of "improved" from the event file
    if value < best:
      best_step, best = step, value
  expected_stop = best_step + 2 * 20
  assert int(trainer.step.numpy()) == expected_stop
  assert [s for s, _ in read_scalars(os.path.join(model_dir, "train"))["train/loss"]][-1] == expected_stop
  with open(os.path.join(model_dir, "best", "best.json")) as f:
    record = json.load(f)
  assert record["step"] == best_step and record["value"] == pytest.approx(best, rel=1e-6)
  # The exported model reproduces the best evaluation by hand, on the validation split.
  served = tf.saved_model.load(os.path.join(model_dir, "best", "saved_model"))
  validation = trainer.splits.validation
  logits = served.serve(tf.constant(validation.features))["outputs"].numpy()
  loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=validation.labels,
                                                        logits=logits).numpy().mean()
  assert loss == pytest.approx(best, rel=1e-5)
  accuracy = float((logits.argmax(axis=1) == validation.labels).mean())
  best_accuracy = dict(read_scalars(os.path.join(model_dir, "eval"))["eval/accuracy"])[best_step]
  assert accuracy == pytest.approx(best_accuracy, abs=1e-6)
  # Rerunning a run that stopped early trains no further.
  again, _ = train_in_process(model_dir, bindings)
  assert int(again.step.numpy()) == expected_stop
