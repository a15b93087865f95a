"""Reliability end to end: real processes, real signals, real checkpoints.

A run killed with SIGKILL at random moments (also while it writes checkpoints, which it does every
loop here) and resumed each time ends bit-identical to an uninterrupted run; SIGTERM checkpoints and
exits with the documented status; a non-finite step stops (or restores) without touching the last
good checkpoint. (Early stopping: tests/test_early_stopping.py.)
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (
  DROPOUT,
  QUICKSTART,
  REPO,
  checkpoint_values,
  read_scalars,
  run_main,
  train_in_process,
)
from trainer.loop import recovery
from trainer.runtime import preemption

# Dropout makes the RNG state part of what must resume; a checkpoint every loop makes kills land in saves.
LONG = DROPOUT + ["Trainer.train_steps=1500", "Trainer.steps_per_loop=10", "Trainer.checkpoint_every=10",
        "Trainer.eval_every=500", "Trainer.keep_checkpoints=2"]


def _command(model_dir: str) -> list[str]:
  return [sys.executable, "-m", "trainer.main", f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}",
          "--deterministic"] + [f"--gin_bindings={b}" for b in LONG]


def _start(model_dir: str) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen(_command(model_dir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait_for_training(process: subprocess.Popen) -> list[str]:
  """Reads the log until the first loop line (training is under way) or the process ends."""
  lines = []
  for line in process.stdout:
    lines.append(line)
    if "train | step:" in line:
      break
  return lines


def _finish(process: subprocess.Popen, lines: list[str]) -> str:
  rest, _ = process.communicate(timeout=300)
  return "".join(lines) + rest


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run's final checkpoint."""
  model_dir = str(tmp_path_factory.mktemp("reference"))
  process = _start(model_dir)
  output = _finish(process, [])
  assert process.returncode == 0, output[-3000:]
  return checkpoint_values(model_dir)


def _assert_bit_identical(model_dir: str, reference: dict) -> None:
  got = checkpoint_values(model_dir)
  assert got.keys() == reference.keys()
  for key in reference:
    np.testing.assert_array_equal(got[key], reference[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_killed_five_times_at_random_moments_resumes_bit_identical(tmp_path, reference):
  rng = random.Random(1234)
  model_dir = str(tmp_path)
  kills = 0
  for _ in range(5):
    process = _start(model_dir)
    lines = _wait_for_training(process)
    time.sleep(rng.uniform(0.0, 1.0))
    process.send_signal(signal.SIGKILL)
    output = _finish(process, lines)
    kills += process.returncode == -signal.SIGKILL
    assert process.returncode in (0, -signal.SIGKILL), output[-3000:]
  assert kills >= 3  # most kills landed mid-run, not after the end
  process = _start(model_dir)
  output = _finish(process, [])
  assert process.returncode == 0, output[-3000:]
  _assert_bit_identical(model_dir, reference)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigterm_checkpoints_exits_75_and_resumes_without_losing_a_step(tmp_path, reference):
  model_dir = str(tmp_path)
  process = _start(model_dir)
  lines = _wait_for_training(process)
  process.send_signal(signal.SIGTERM)
  output = _finish(process, lines)
  assert process.returncode == preemption.EXIT_PREEMPTED, output[-3000:]
  stopped_at = [int(s) for s in re.findall(r"train \| step: (\d+)/", output)][-1]
  assert f"preempted: checkpoint written at step {stopped_at}" in output
  assert os.path.exists(os.path.join(model_dir, "checkpoints", f"ckpt-{stopped_at}.index"))
  process = _start(model_dir)
  output = _finish(process, [])
  assert process.returncode == 0, output[-3000:]
  assert f"at step {stopped_at}" in output  # resumed exactly there
  steps = [s for s, _ in read_scalars(os.path.join(model_dir, "train"))["train/loss"]]
  assert steps == list(range(10, 1501, 10))  # every loop once: none lost, none repeated
  _assert_bit_identical(model_dir, reference)


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
