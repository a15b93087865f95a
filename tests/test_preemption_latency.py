"""A preemption notice waits for one compiled call, not a whole host loop; the split changes nothing.

On a single worker `TrainRunner.train` splits a loop into calls of about `SECONDS_PER_CALL` and asks
after each whether a signal came; the steps, their data and their metrics are those of one call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import QUICKSTART, REPO, checkpoint_values
from trainer.config import parsing
from trainer.loop import builder, runners
from trainer.loop.settings import Trainer
from trainer.runtime import preemption

BINDINGS = ["Trainer.regularizers=[@L2(), @ProximalL1()]", "L2.scale=1e-4", "ProximalL1.scale=1e-5",
            "Trainer.batch_size=32"]


def _runner(tmp_path, name: str) -> tuple[runners.TrainRunner, builder.Run]:
  """A fresh quickstart run (the same seed, so the same initial weights) and its TrainRunner."""
  parsing.parse([QUICKSTART], BINDINGS)
  run = builder.build(Trainer(), strategy=tf.distribute.get_strategy(), model_dir=str(tmp_path / name))
  return runners.train_runner(run), run


def _weights(run: builder.Run) -> list[np.ndarray]:
  return [variable.numpy() for variable in run.model.variables]


def test_a_loop_split_into_calls_trains_and_measures_exactly_as_one_call(tmp_path, monkeypatch):
  whole_runner, whole_run = _runner(tmp_path, "whole")
  whole = whole_runner.train(30)
  monkeypatch.setattr(runners, "SECONDS_PER_CALL", 1e-9)  # every call one step: 30 calls
  split_runner, split_run = _runner(tmp_path, "split")
  split = split_runner.train(30, stop_requested=lambda: False)
  assert split.step == whole.step == 30
  for got, expected in zip(_weights(split_run), _weights(whole_run)):
    np.testing.assert_array_equal(got, expected)
  for tag in ("train/loss", "train/data_loss", "train/accuracy", "penalty/l2", "norms/weights_l2"):
    assert split.scalars[tag] == whole.scalars[tag], tag


def test_a_stop_request_ends_the_loop_after_the_running_call_and_training_resumes_exactly(tmp_path):
  reference_runner, reference_run = _runner(tmp_path, "reference")
  reference_runner.train(20)
  stopped_runner, stopped_run = _runner(tmp_path, "stopped")
  first = stopped_runner.train(20, stop_requested=lambda: True)
  assert first.step == 1 and first.scalars  # the first call is one step; the loop ended there
  assert stopped_runner.train(19).step == 20
  for got, expected in zip(_weights(stopped_run), _weights(reference_run)):
    np.testing.assert_array_equal(got, expected)


def test_only_a_single_worker_stops_inside_a_loop():
  watcher = preemption.PreemptionWatcher(tf.distribute.get_strategy())
  check = watcher.local_check()
  assert check is not None and not check()
  watcher._handle(signal.SIGTERM, None)
  assert check() and watcher.should_stop()


@pytest.mark.multiprocess
def test_sigterm_in_a_long_loop_checkpoints_mid_loop_and_exits_75(tmp_path):
  """A loop of 10^6 steps (minutes on this model) is ended by SIGTERM after the running call."""
  model_dir = tmp_path / "run"
  long = 10**6
  args = [f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}"] + [
      f"--gin_bindings={b}" for b in (f"Trainer.train_steps={long}", f"Trainer.steps_per_loop={long}",
                                      f"Trainer.eval_every={long}", f"Trainer.checkpoint_every={long}")]
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  process = subprocess.Popen([sys.executable, "-m", "trainer.main", *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in process.stdout:  # the last start-up line, right before the first loop
    lines.append(line)
    if "starting from scratch" in line:
      break
  time.sleep(3)
  process.send_signal(signal.SIGTERM)
  signalled = time.monotonic()
  output, _ = process.communicate(timeout=300)  # a hang bound; the latency itself is measured in docs
  latency = time.monotonic() - signalled
  output = "".join(lines) + output
  assert process.returncode == preemption.EXIT_PREEMPTED, output[-3000:]
  step = int(output.rsplit("checkpoint written at step ", 1)[1].split(";")[0])
  assert 0 < step < long
  assert checkpoint_values(str(model_dir))  # the checkpoint reads back
  print(f"SIGTERM to exit: {latency:.1f} s at step {step}")
