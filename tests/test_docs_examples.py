"""The README's documented contracts, run for real: the data loader of "Writing a data loader" and the
linear model (`MLP.hidden_sizes = ()`)."""

from __future__ import annotations

import gin
import numpy as np
import tensorflow as tf

from tests import helpers
from trainer.data import ArrayData, Splits


def my_data(num_classes: int = 3) -> Splits:
  """The README's example loader, verbatim (registered with gin by the test)."""
  rng = np.random.default_rng(0)

  def split(n):
    features = rng.normal(size=(n, 8)).astype(np.float32)
    return ArrayData(features, features[:, :num_classes].argmax(axis=1).astype(np.int32))

  train, validation, test = split(600), split(100), split(100)
  return Splits(name="my_data", train=train, validation=validation, test=test, num_classes=num_classes,
                description="my_data: 600 / 100 / 100, no label noise")


def test_the_readme_loader_trains_a_linear_model(tmp_path):
  gin.external_configurable(my_data, "my_data")
  run, metrics = helpers.train_in_process(str(tmp_path), [
      "Trainer.data = @my_data", "MLP.hidden_sizes = ()", "MLP.num_outputs = 3", "Trainer.train_steps = 100",
      "Trainer.steps_per_loop = 50", "Trainer.eval_every = 50", "Trainer.checkpoint_every = 100",
      "Trainer.batch_size = 32", "Trainer.learning_rate = 0.05"])
  dense = [layer for layer in run.model.layers if isinstance(layer, tf.keras.layers.Dense)]
  assert len(dense) == 1 and tuple(dense[0].kernel.shape) == (8, 3)  # logistic regression
  assert run.splits.name == "my_data" and metrics["test/accuracy"] > 0.9
