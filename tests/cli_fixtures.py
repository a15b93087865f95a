"""Two real CLI runs, made once per test session and read by test_cli.py and test_console.py.

A fresh `python -m trainer.main` process trains the quickstart for 200 steps from a directory *outside*
the repo (so the shipped gin configs must resolve through the package search path), with early stopping
bound (so a SavedModel of the best weights is exported at the end), on the console a user gets: without
the test helpers' TF_CPP_MIN_LOG_LEVEL, at the default verbosity. A copy of the directory as that process
left it is kept (test_results_json.py reads its `results.json`). A second process resumes the run to 300
steps with `--verbosity=1`. The fixture is made available to every test module by conftest.py.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import FAST, REPO


@dataclasses.dataclass(frozen=True)
class CliRuns:
  """The run's directory, a copy of it after the first process, and the combined output of the first
  (quiet) and second (verbose) process."""
  model_dir: str
  first_dir: str
  first: str
  second: str


def _user_cli(args: list[str], cwd: str) -> str:
  """`python -m trainer.main ARGS` as a user runs it (TensorFlow's log level left alone); its output."""
  env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
  env["PYTHONPATH"] = REPO
  process = subprocess.run([sys.executable, "-m", "trainer.main", *args], cwd=cwd, env=env, timeout=300,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  assert process.returncode == 0, process.stdout[-4000:]
  return process.stdout


@pytest.fixture(scope="session")
def cli_runs(tmp_path_factory) -> CliRuns:
  cwd = tmp_path_factory.mktemp("elsewhere")
  model_dir = str(cwd / "run")
  common = ["--gin_file=gin_configs/quickstart.gin", f"--model_dir={model_dir}",
            "--gin_bindings=Trainer.early_stopping=@EarlyStopping()"]
  first = _user_cli(common + [f"--gin_bindings={b}" for b in FAST], str(cwd))
  first_dir = str(tmp_path_factory.mktemp("first") / "run")
  shutil.copytree(model_dir, first_dir)
  second = _user_cli(common + [f"--gin_bindings={b}" for b in FAST + ["Trainer.train_steps=300"]]
                     + ["--verbosity=1"], str(cwd))
  return CliRuns(model_dir, first_dir, first, second)
