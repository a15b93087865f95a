"""`trainer.train` from Python: the command line's quiet console, and a progress bar instead of log lines."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest

from tests import helpers
from trainer.loop import progress

# Three loops, evaluating at 20 and 30 (the last step always evaluates).
BINDINGS = ["Trainer.train_steps=30", "Trainer.steps_per_loop=10", "Trainer.eval_every=20",
            "Trainer.checkpoint_every=30"]
# What TensorFlow prints at import and at its first device query when nobody quiets it (which of
# these appear depends on the machine: its CPU features, whether CUDA libraries are installed).
START_UP = ("absl::InitializeLog", "oneDNN", "cudart_stub", "cpu_feature_guard", "cuInit", "E0000", "I0000")


@pytest.mark.multiprocess
def test_a_program_calling_train_gets_a_quiet_console_and_a_progress_bar(tmp_path):
  script = textwrap.dedent(f"""
      import trainer
      results = trainer.train([{helpers.QUICKSTART!r}], {BINDINGS!r}, model_dir={str(tmp_path)!r})
      print("test/accuracy", results.metrics["test/accuracy"])
  """)
  env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
  env["PYTHONPATH"] = helpers.REPO
  process = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, timeout=300,
                           capture_output=True, text=True)
  assert process.returncode == 0, process.stderr[-3000:]
  assert not [word for word in START_UP if word in process.stderr + process.stdout], process.stderr[-3000:]
  bars = [line for line in process.stdout.splitlines() if line.startswith("[")]
  # Not a terminal: one line per loop, the last with the full bar and the final evaluation's scalars.
  assert [line.split("] ")[1].split(" | ")[0] for line in bars] == ["step: 10/30", "step: 20/30",
                                                                     "step: 30/30"], process.stdout
  assert bars[-1].startswith("[" + "#" * 20 + "]") and "| eval/accuracy: " in bars[-1]


def test_verbose_draws_the_latest_scalars_and_false_draws_nothing(tmp_path, capsys):
  import trainer

  results = trainer.train([helpers.QUICKSTART], BINDINGS, model_dir=str(tmp_path / "shown"))
  bars = capsys.readouterr().out.splitlines()
  assert len(bars) == 3, bars
  assert "eval/" not in bars[0] and f"eval/accuracy: {results.metrics['eval/accuracy']:.4g} |" in bars[2]
  assert f"| loss: {results.metrics['train/loss']:.4g} |" in bars[2]
  trainer.train([helpers.QUICKSTART], BINDINGS, model_dir=str(tmp_path / "silent"), verbose=False)
  assert capsys.readouterr().out == ""


class _Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_in_a_terminal_the_bar_is_redrawn_in_place_once_per_loop_and_ended_by_close():
  terminal = _Terminal()
  bar = progress.ProgressBar(train_steps=30, eval_every=20, stream=terminal)
  # The controller's order: a loop's train action, then (on an evaluating loop) its eval action.
  bar(10, {"train/loss": 2.0})
  bar(20, {"train/loss": 1.234567})
  bar(20, {"train/loss": 1.234567, "eval/accuracy": 0.5123456})
  bar(30, {"train/loss": 1.0})
  bar(30, {"train/loss": 1.0, "eval/accuracy": 0.75})
  bar.close()
  drawn = terminal.getvalue()
  assert drawn.endswith("\n") and drawn.count("\n") == 1
  frames = drawn[:-1].split("\r")[1:]
  assert [frame.split(" | ")[0] for frame in frames] == [
      "[######--------------] step: 10/30", "[#############-------] step: 20/30",
      "[####################] step: 30/30"]
  assert "| loss: 1.235 |" in frames[1] and "eval/accuracy: 0.5123 |" in frames[1]
  assert "| loss: 1 |" in frames[2] and "eval/accuracy: 0.75 |" in frames[2]
  # The last frame's text is shorter: blanks cover what the frame before it would leave on screen.
  assert len(frames[2].rstrip()) < len(frames[1]) <= len(frames[2])
