"""Divergence: a non-finite step stops naming the term and step with the last good checkpoint intact, or
(Trainer.on_nonfinite='restore') reloads an earlier checkpoint at a lower learning rate, falling back
further when a restored checkpoint diverges again.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from tests.helpers import (
  QUICKSTART,
  checkpoint_values,
  read_scalars,
  run_main,
  run_main_captured,
  short_run_args,
  train_in_process,
)
from trainer.loop import recovery

EXPLODING = ["Trainer.optimizer=@SGD", "Trainer.learning_rate=@Piecewise()",
             "Piecewise.base_learning_rate=0.01",
             "Piecewise.boundaries=[25]", "Piecewise.multipliers=[1e12]", "Trainer.train_steps=100",
             "Trainer.steps_per_loop=10", "Trainer.checkpoint_every=10", "Trainer.eval_every=100"]


def _latest_step(model_dir: str) -> int:
  return int(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).rsplit("-", 1)[1])


def test_nonfinite_step_stops_naming_term_and_step_with_the_last_checkpoint_intact(tmp_path, capsys):
  model_dir = str(tmp_path)
  code = run_main([f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}"]
                  + [f"--gin_bindings={b}" for b in EXPLODING])
  err = capsys.readouterr().err
  assert code == recovery.EXIT_NONFINITE
  match = re.search(r"non-finite (.+) at step (\d+) \(Trainer.on_nonfinite='stop'\)", err)
  assert match, err
  terms, step = match.group(1).split(", "), int(match.group(2))
  assert set(terms) <= {"data loss", "penalty l2", "gradients"} and terms
  assert 26 <= step <= 60  # the rate explodes from step 26 on
  latest = _latest_step(model_dir)
  assert latest < step and f"ckpt-{latest}) is untouched" in err
  values = checkpoint_values(model_dir)
  assert all(np.isfinite(v).all() for v in values.values() if np.issubdtype(np.asarray(v).dtype, np.floating))


def test_restore_policy_reloads_the_last_good_checkpoint_at_a_lower_rate(tmp_path, caplog):
  bindings = EXPLODING + ["Trainer.on_nonfinite='restore'", "Trainer.restore_lr_factor=1e-12"]
  trainer, results = train_in_process(str(tmp_path), bindings)
  assert int(trainer.step.numpy()) == 100 and np.isfinite(results["train/loss"])
  assert any("restored" in r.getMessage() and "scaled the learning rate by 1e-12" in r.getMessage()
             for r in caplog.records)
  rates = dict(read_scalars(os.path.join(str(tmp_path), "train"))["optimizer/learning_rate"])
  assert rates[100] == pytest.approx(0.01, rel=1e-5)  # 0.01 * 1e12 * 1e-12


def test_restore_falls_back_past_a_checkpoint_that_diverges_again(tmp_path, capsys, caplog):
  """A learning-rate spike on the last step of the first loop: ckpt-10 has finite but huge weights and the
  next loop diverges. Restoring ckpt-10 cannot help, so the second restore goes back to ckpt-0."""
  spike = ["Trainer.optimizer=@SGD", "Trainer.learning_rate=@Piecewise()",
           "Piecewise.base_learning_rate=0.01", "Piecewise.boundaries=[9, 10]",
           "Piecewise.multipliers=[1e30, 1.0]", "Trainer.on_nonfinite='restore'",
           "Trainer.restore_lr_factor=1e-15", "Trainer.keep_checkpoints=5"]
  code, output = run_main_captured(short_run_args(tmp_path / "run", steps=30, extra=spike), capsys, caplog)
  assert code == 0, output
  assert "ckpt-10 diverged again after it was restored: falling back to an older checkpoint" in output
  assert "restored " + str(tmp_path / "run" / "checkpoints" / "ckpt-0") in output
  values = helpers.checkpoint_values(str(tmp_path / "run"))
  assert all(np.all(np.abs(v) < 1e6) for v in values.values() if np.issubdtype(v.dtype, np.floating))
