"""One tiny real sweep, trained once per test session and shared by test_sweep.py and test_results.py.

Two points (`L2.scale` 0 and 1e-2) of the quickstart shrunk to 20 steps, run by `occam-sweep` (as
`python -m trainer.experiments.sweep`) in subprocesses, then run again (which must skip both), then
reported on by `occam-report`. The fixture is made available to every test module by conftest.py.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

TINY = ["Trainer.train_steps=20", "Trainer.steps_per_loop=10", "Trainer.eval_every=10",
        "Trainer.checkpoint_every=10", "MLP.hidden_sizes=(16,)"]
GRID = ["--grid", "L2.scale=[0, 1e-2]"]
POINTS = ("L2.scale=0", "L2.scale=1e-2")


def run_module(module: str, args: list[str]) -> subprocess.CompletedProcess:
  """`python -m trainer.experiments.MODULE ARGS` from the repo root; stdout and stderr captured together.

  Without the test helpers' TF_CPP_MIN_LOG_LEVEL: the commands keep TensorFlow's start-up lines off the
  console themselves (test_sweep.py checks it).
  """
  env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
  return subprocess.run([sys.executable, "-m", f"trainer.experiments.{module}", *args], cwd=REPO, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)


@dataclasses.dataclass(frozen=True)
class Swept:
  """The finished sweep: its directory, the report's directory, and the two sweep invocations' output."""
  sweep_dir: str
  out_dir: str
  first: str
  second: str


@pytest.fixture(scope="session")
def swept(tmp_path_factory) -> Swept:
  """Runs the two-point sweep twice (the second must skip both) and reports on it."""
  root = tmp_path_factory.mktemp("sweep")
  sweep_dir, out_dir = str(root / "sweep"), str(root / "report")
  args = (["--gin_file=gin_configs/quickstart.gin", f"--sweep_dir={sweep_dir}", "--parallel=2"]
          + [f"--gin_bindings={b}" for b in TINY] + GRID)
  first = run_module("sweep", args)
  assert first.returncode == 0, first.stdout[-4000:]
  second = run_module("sweep", args)
  assert second.returncode == 0, second.stdout[-4000:]
  made = run_module("report", [sweep_dir, f"--out_dir={out_dir}"])
  assert made.returncode == 0, made.stdout[-4000:]
  return Swept(sweep_dir, out_dir, first.stdout, second.stdout)
