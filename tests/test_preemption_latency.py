"""A preemption notice waits for one compiled call, not a whole host loop; the split changes nothing.

On a single worker `TrainRunner.train` splits a loop into calls of about `SECONDS_PER_CALL` and asks
after each whether a signal came; the steps, their data and their metrics are those of one call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import QUICKSTART, REPO, checkpoint_values
from tests.test_distribution import _free_port
from trainer.config import parsing
from trainer.loop import builder, runners
from trainer.loop.settings import Trainer
from trainer.runtime import checkpointing, preemption

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
  split = split_runner.train(30, preemption.PreemptionWatcher(split_run.strategy).loop_calls())
  assert split.step == whole.step == 30
  for got, expected in zip(_weights(split_run), _weights(whole_run)):
    np.testing.assert_array_equal(got, expected)
  for tag in ("train/loss", "train/data_loss", "train/accuracy", "penalty/l2", "norms/weights_l2"):
    assert split.scalars[tag] == whole.scalars[tag], tag


def test_a_stop_request_ends_the_loop_after_the_running_call_and_training_resumes_exactly(tmp_path):
  reference_runner, reference_run = _runner(tmp_path, "reference")
  reference_runner.train(20)
  stopped_runner, stopped_run = _runner(tmp_path, "stopped")
  watcher = preemption.PreemptionWatcher(stopped_run.strategy)
  watcher._handle(signal.SIGTERM, None)  # as if a SIGTERM had come
  first = stopped_runner.train(20, watcher.loop_calls())
  assert first.step == 1 and first.scalars  # the first call is one step; the loop ended there
  assert stopped_runner.train(19).step == 20
  for got, expected in zip(_weights(stopped_run), _weights(reference_run)):
    np.testing.assert_array_equal(got, expected)


def test_a_single_worker_stops_inside_a_loop_on_its_own_signal():
  watcher = preemption.PreemptionWatcher(tf.distribute.get_strategy())
  calls = watcher.loop_calls()
  assert not calls.stop_requested() and calls.steps_per_call(7) == 7
  watcher._handle(signal.SIGTERM, None)
  assert calls.stop_requested() and watcher.should_stop()


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


# Two worker processes: a shorter call budget (set in the child, before `trainer.main` runs) puts
# several calls into the seconds the test can afford, so the agreed stop falls mid-loop.
_WORKER = ("import sys; from trainer.loop import runners; runners.SECONDS_PER_CALL = 1.0; "
           "from trainer import main; main.main()")
_STEPS = 1000


def _start_workers(model_dir, addresses: list[str], scratch) -> list[subprocess.Popen]:
  args = [f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}", "--strategy=multi_worker_mirrored",
          "--cluster_timeout=120"] + [f"--gin_bindings={b}" for b in (
              f"Trainer.train_steps={_STEPS}", f"Trainer.steps_per_loop={_STEPS}",
              f"Trainer.eval_every={_STEPS}", f"Trainer.checkpoint_every={_STEPS}")]
  workers = []
  for index in range(2):
    tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
               TMPDIR=str(scratch))
    workers.append(subprocess.Popen([sys.executable, "-c", _WORKER, *args], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return workers


def _finish(workers: list[subprocess.Popen], before: Sequence[str] = ("", "")) -> list[str]:
  return [head + worker.communicate(timeout=600)[0] for worker, head in zip(workers, before)]  # hang bound


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_sigterm_to_one_of_two_workers_stops_both_at_the_same_step_and_the_resume_is_exact(tmp_path):
  """TensorFlow's PreemptionCheckpointHandler agrees the step; Occam's checkpoint is written there; a rerun
  of both workers ends bit for bit where two uninterrupted workers end."""
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  addresses = [[f"localhost:{_free_port()}" for _ in range(2)] for _ in range(3)]
  reference = _start_workers(tmp_path / "reference", addresses[0], scratch)
  interrupted = _start_workers(tmp_path / "interrupted", addresses[1], scratch)
  head = []
  for line in interrupted[1].stdout:  # the signal handlers are in place from this line on
    head.append(line)
    if "preemption: SIGTERM or SIGINT stops training" in line:
      break
  interrupted[1].send_signal(signal.SIGTERM)  # the non-chief worker: the chief learns it from the handler
  outputs = _finish(interrupted, ("", "".join(head)))
  steps = set()
  for worker, output in zip(interrupted, outputs):
    assert worker.returncode == preemption.EXIT_PREEMPTED, output[-3000:]
    assert "Traceback" not in output
    steps.add(int(output.rsplit("checkpoint written at step ", 1)[1].split(";")[0]))
    assert f"every worker stopped at step {min(steps)}" in output  # the handler's agreed stop
  assert len(steps) == 1 and 0 < min(steps) < _STEPS, steps
  step = steps.pop()
  assert checkpointing.checkpoint_steps(str(tmp_path / "interrupted" / "checkpoints")) == [step]

  resumed = _start_workers(tmp_path / "interrupted", addresses[2], scratch)
  outputs = _finish(resumed)
  for worker, output in zip([*resumed, *reference], outputs + _finish(reference)):
    assert worker.returncode == 0, output[-3000:]
  assert f"ckpt-{step} at step {step}" in outputs[0]  # `resumed from .../ckpt-N at step N`
  expected, got = (checkpoint_values(str(tmp_path / name)) for name in ("reference", "interrupted"))
  assert expected.keys() == got.keys() and len(expected) >= 6
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  assert os.listdir(scratch) == []  # the workers' scratch checkpoints and the handler's directory are gone
