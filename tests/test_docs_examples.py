"""The documented contracts, run for real: the data loader of docs/DATA.md ("Writing a data loader") and
the linear model (`MLP.hidden_sizes = ()`)."""

from __future__ import annotations

import os

import gin
import tensorflow as tf

from tests import helpers


def _documented_loader():
  """The example loader of docs/DATA.md, "Writing a data loader", executed as a user would paste it."""
  text = open(os.path.join(helpers.REPO, "docs", "DATA.md")).read()
  section = text[text.index("## Writing a data loader"):]
  code = section[section.index("```python") + len("```python"):]
  code = code[:code.index("```")]
  namespace: dict = {"__name__": "docs_data_example"}
  with gin.unlock_config():
    exec(compile(code, "docs/DATA.md", "exec"), namespace)  # noqa: S102 -- the documented snippet itself
  return namespace["my_data"]


def test_the_documented_loader_trains_a_linear_model(tmp_path):
  _documented_loader()  # registers `my_data` with gin, as the snippet's decorator does
  run, metrics = helpers.train_in_process(str(tmp_path), [
      "Trainer.data = @my_data", "MLP.hidden_sizes = ()", "MLP.num_outputs = 3", "Trainer.train_steps = 100",
      "Trainer.steps_per_loop = 50", "Trainer.eval_every = 50", "Trainer.checkpoint_every = 100",
      "Trainer.batch_size = 32", "Trainer.learning_rate = 0.05"])
  dense = [layer for layer in run.model.layers if isinstance(layer, tf.keras.layers.Dense)]
  assert len(dense) == 1 and tuple(dense[0].kernel.shape) == (8, 3)  # logistic regression
  assert run.splits.name == "my_data" and metrics["test/accuracy"] > 0.9
