"""Early stopping: the test metrics of the best-validation weights, exported once at the end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from trainer.loop import early_stopping

# min_delta=1 makes the first evaluation (step 20) the best for good: stop at 20 + 3 * 20 = 80, with
# best weights that differ from the last ones.
BINDINGS = ["Trainer.train_steps=400", "Trainer.steps_per_loop=20", "Trainer.eval_every=20",
            "Trainer.checkpoint_every=100", "Trainer.early_stopping=@EarlyStopping()",
            "EarlyStopping.patience=3", "EarlyStopping.min_delta=1.0"]


def _accuracy(outputs, labels) -> float:
  return float((np.asarray(outputs).argmax(axis=1) == labels).mean())


def test_best_weights_test_metrics_and_one_export_at_the_end(tmp_path, monkeypatch):
  exports = []
  export = early_stopping.export_saved_model
  monkeypatch.setattr(early_stopping, "export_saved_model",
                      lambda *args, **kwargs: exports.append(args[1]) or export(*args, **kwargs))
  model_dir = str(tmp_path)
  run, metrics = helpers.train_in_process(model_dir, BINDINGS)
  assert int(run.step.numpy()) == 80 and int(run.early_stopping.best_step.numpy()) == 20
  assert exports == [os.path.join(model_dir, "best", "saved_model")]  # once, not at every improvement

  test = run.splits.test
  loaded = tf.saved_model.load(exports[0])
  served = loaded.serve(tf.constant(test.features))["outputs"]
  assert metrics["best/test/accuracy"] == pytest.approx(_accuracy(served, test.labels), abs=1e-6)
  # The model the caller gets holds the last weights, whose test accuracy is test/accuracy.
  last = run.model(tf.constant(test.features), training=False)
  assert metrics["test/accuracy"] == pytest.approx(_accuracy(last, test.labels), abs=1e-6)
  assert not np.allclose(served.numpy(), np.asarray(last))

  written = helpers.read_scalars(os.path.join(model_dir, "eval"))
  assert written["best/test/accuracy"] == [(20, pytest.approx(metrics["best/test/accuracy"]))]
  with open(os.path.join(model_dir, "results.json")) as file:
    best = json.load(file)["early_stopping"]
  assert best["step"] == 20 and best["stopped_early"]
  assert best["test"] == {"accuracy": pytest.approx(metrics["best/test/accuracy"]),
                          "loss": pytest.approx(metrics["best/test/loss"])}
