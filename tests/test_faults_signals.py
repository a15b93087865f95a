"""Signals: real processes killed, preempted or interrupted, and resumed.

Ctrl-C inside `trainer.train` checkpoints and raises KeyboardInterrupt, and the caller's signal handlers
are back afterwards; on the command line it checkpoints and exits 75. A run killed with SIGKILL at random
moments (also while it writes checkpoints, which it does every loop here) and resumed each time ends
bit-identical to an uninterrupted run; SIGTERM checkpoints, exits 75 and resumes without losing a step.
(The latency of a preemption notice: tests/test_preemption_latency.py.)
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.helpers import DROPOUT, FAST, QUICKSTART, REPO, checkpoint_values, read_scalars, train_in_process
from trainer.runtime import checkpointing, preemption

# Long enough never to finish on its own; one checkpoint at most, the one the interrupt writes.
ENDLESS = ["Trainer.train_steps=1000000", "Trainer.steps_per_loop=10", "Trainer.eval_every=10",
           "Trainer.checkpoint_every=1000000"]

# A program using the API: the callback says when training is under way, the handler check is printed.
SCRIPT = textwrap.dedent("""
    import signal, sys
    import trainer

    def own_handler(signum, frame):
      raise SystemExit("the caller's SIGTERM handler")

    signal.signal(signal.SIGTERM, own_handler)
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    def under_way(step, metrics):
      print("training at step", step, flush=True)
    try:
      trainer.train([sys.argv[1]], sys.argv[3:], model_dir=sys.argv[2], callbacks=[under_way], verbose=False)
    except KeyboardInterrupt as error:
      after = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
      print("KeyboardInterrupt", type(error).__name__, error.step, "handlers restored:", before == after)
""")


def _start(command: list[str]) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _interrupt_when(process: subprocess.Popen, marker: str) -> str:
  """Sends SIGINT once a line containing `marker` shows training is under way; the whole output."""
  lines = []
  for line in process.stdout:
    lines.append(line)
    if marker in line:
      process.send_signal(signal.SIGINT)
      break
  rest, _ = process.communicate(timeout=300)
  return "".join(lines) + rest


@pytest.mark.multiprocess
def test_ctrl_c_inside_train_checkpoints_and_raises_keyboard_interrupt(tmp_path):
  model_dir = str(tmp_path / "run")
  process = _start([sys.executable, "-c", SCRIPT, QUICKSTART, model_dir, *ENDLESS])
  output = _interrupt_when(process, "training at step")
  assert process.returncode == 0, output[-3000:]
  reported = [line.split() for line in output.splitlines() if line.startswith("KeyboardInterrupt")]
  assert len(reported) == 1, output[-3000:]
  _, kind, step, *_, restored = reported[0]
  assert kind == "Interrupted" and restored == "True", output[-3000:]
  # The interrupt's checkpoint is the only one (checkpoint_every is far away), at the step it names.
  assert checkpointing.checkpoint_steps(os.path.join(model_dir, "checkpoints")) == [int(step)]


@pytest.mark.multiprocess
def test_ctrl_c_on_the_command_line_checkpoints_and_exits_75(tmp_path):
  model_dir = str(tmp_path / "run")
  process = _start([sys.executable, "-m", "trainer.main", f"--gin_file={QUICKSTART}",
                    f"--model_dir={model_dir}", *[f"--gin_bindings={b}" for b in ENDLESS]])
  output = _interrupt_when(process, "train | step:")
  assert process.returncode == preemption.EXIT_PREEMPTED, output[-3000:]
  assert "Traceback" not in output and "interrupted: checkpoint written at step" in output, output[-3000:]
  steps = checkpointing.checkpoint_steps(os.path.join(model_dir, "checkpoints"))
  assert len(steps) == 1 and f"checkpoint written at step {steps[0]}" in output


def test_train_gives_the_callers_signal_handlers_back(tmp_path):
  def own_handler(signum, frame):
    raise AssertionError("not called")

  previous = signal.signal(signal.SIGTERM, own_handler)
  try:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    train_in_process(str(tmp_path / "run"), FAST[:1])
    assert {sig: signal.getsignal(sig) for sig in before} == before
  finally:
    signal.signal(signal.SIGTERM, previous)


# Dropout makes the RNG state part of what must resume; a checkpoint every loop makes kills land in saves.
LONG = DROPOUT + ["Trainer.train_steps=1500", "Trainer.steps_per_loop=10", "Trainer.checkpoint_every=10",
        "Trainer.eval_every=500", "Trainer.keep_checkpoints=2"]


def _command(model_dir: str) -> list[str]:
  return [sys.executable, "-m", "trainer.main", f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}",
          "--deterministic"] + [f"--gin_bindings={b}" for b in LONG]


def _start_long(model_dir: str) -> subprocess.Popen:
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
  process = _start_long(model_dir)
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
    process = _start_long(model_dir)
    lines = _wait_for_training(process)
    time.sleep(rng.uniform(0.0, 1.0))
    process.send_signal(signal.SIGKILL)
    output = _finish(process, lines)
    kills += process.returncode == -signal.SIGKILL
    assert process.returncode in (0, -signal.SIGKILL), output[-3000:]
  assert kills >= 3  # most kills landed mid-run, not after the end
  process = _start_long(model_dir)
  output = _finish(process, [])
  assert process.returncode == 0, output[-3000:]
  _assert_bit_identical(model_dir, reference)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigterm_checkpoints_exits_75_and_resumes_without_losing_a_step(tmp_path, reference):
  model_dir = str(tmp_path)
  process = _start_long(model_dir)
  lines = _wait_for_training(process)
  process.send_signal(signal.SIGTERM)
  output = _finish(process, lines)
  assert process.returncode == preemption.EXIT_PREEMPTED, output[-3000:]
  stopped_at = [int(s) for s in re.findall(r"train \| step: (\d+)/", output)][-1]
  assert f"preempted: checkpoint written at step {stopped_at}" in output
  assert os.path.exists(os.path.join(model_dir, "checkpoints", f"ckpt-{stopped_at}.index"))
  process = _start_long(model_dir)
  output = _finish(process, [])
  assert process.returncode == 0, output[-3000:]
  assert f"at step {stopped_at}" in output  # resumed exactly there
  steps = [s for s, _ in read_scalars(os.path.join(model_dir, "train"))["train/loss"]]
  assert steps == list(range(10, 1501, 10))  # every loop once: none lost, none repeated
  _assert_bit_identical(model_dir, reference)
