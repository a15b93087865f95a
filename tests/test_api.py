"""The Python API: `trainer.train` with per-evaluation callbacks, bad input, and old run directories."""

from __future__ import annotations

import os
import shutil

import pytest

import trainer
from tests.helpers import FAST, QUICKSTART, REPO, read_scalars
from trainer.runtime import compat


def test_callbacks_see_every_evaluation_and_can_stop_the_run(tmp_path):
  model_dir = str(tmp_path / "run")
  seen = []

  def watch(step, metrics):
    seen.append((step, metrics["eval/accuracy"], metrics["train/loss"]))
    return step >= 100  # stop after the first evaluation

  results = trainer.train([QUICKSTART], FAST, model_dir=model_dir, callbacks=[watch])
  assert [step for step, _, _ in seen] == [100]
  assert results.stopped_by_callback and results.step == 100 and results.restored_from is None
  logged = dict(read_scalars(os.path.join(model_dir, "eval"))["eval/accuracy"])
  assert logged[100] == pytest.approx(seen[0][1], rel=1e-6)  # the callback saw what TensorBoard shows
  assert "test/accuracy" in results.metrics  # the final evaluation still ran
  # The stop wrote a checkpoint at that step: calling again continues from it to the end.
  resumed = trainer.train([QUICKSTART], FAST, model_dir=model_dir,
                          callbacks=[lambda step, m: seen.append(step)])
  assert resumed.restored_from.endswith("ckpt-100") and resumed.step == 200 and seen[-1] == 200


def test_bad_input_raises_before_anything_is_written(tmp_path):
  model_dir = tmp_path / "run"
  with pytest.raises(trainer.InvalidRunError, match="Trainer.nope"):
    trainer.train([QUICKSTART], ["Trainer.nope = 1"], model_dir=str(model_dir))
  with pytest.raises(trainer.InvalidRunError, match="MLP.num_outputs = 10"):
    trainer.train([QUICKSTART], ["MLP.num_outputs=3"], model_dir=str(model_dir))
  assert not model_dir.exists()


def test_a_run_directory_written_by_an_older_release_resumes(tmp_path):
  """tests/data/older_release_runs holds runs written by an older release (20 steps of the
  quickstart with these bindings; Keras 2 and Keras 3 checkpoints differ, so one per lane). Its
  config.gin repeats defaults that base.gin no longer binds: the config guard must accept it. It also
  binds WarmupCosine.decay_steps=2000, which the quickstart no longer does (its cosine follows
  train_steps): resuming that run means keeping its schedule, so the binding is repeated here."""
  old = os.path.join(REPO, "tests", "data", "older_release_runs",
                     "keras3" if compat.IS_KERAS_3 else "keras2")
  model_dir = str(tmp_path / "old_run")
  shutil.copytree(old, model_dir)
  bindings = ["MLP.hidden_sizes=(16,)", "Trainer.steps_per_loop=10", "Trainer.eval_every=10",
              "Trainer.checkpoint_every=10", "Trainer.keep_checkpoints=1", "Trainer.train_steps=40",
              "WarmupCosine.decay_steps=2000"]
  results = trainer.train([QUICKSTART], bindings, model_dir=model_dir)
  assert results.restored_from == os.path.join(model_dir, "checkpoints", "ckpt-20")
  assert results.step == 40
  steps = [step for step, _ in read_scalars(os.path.join(model_dir, "train"))["train/loss"]]
  assert steps == [10, 20, 30, 40]
