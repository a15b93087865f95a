"""Ctrl-C: inside `trainer.train` it checkpoints and raises KeyboardInterrupt, and the caller's signal
handlers are back afterwards; the command line still checkpoints and exits 75."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import FAST, QUICKSTART, REPO, train_in_process
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
