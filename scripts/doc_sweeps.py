"""What the doc generators (make_experiments_doc.py, make_benchmarks_doc.py) share: sweeps and their runs.

Each doc is regenerated from real `occam-sweep` runs: a `Sweep` names one invocation, `run_sweeps`
runs (or resumes) them from the repository root with this interpreter, `wall_time` and `machine`
say what the runs cost and where, and `common_arguments` gives both scripts the same command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import subprocess
import sys
from typing import Sequence

from trainer.experiments import sweep as sweep_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # The checkout whose docs are written.


@dataclasses.dataclass(frozen=True)
class Sweep:
  """One `occam-sweep` invocation: its directory name under the root, config, grid and fixed bindings."""
  name: str
  gin_file: str
  grid: tuple[str, ...]
  bindings: tuple[str, ...] = ()

  def argv(self, root: str, parallel: int) -> list[str]:
    return (["occam-sweep", f"--gin_file={self.gin_file}"]
            + [arg for entry in self.grid for arg in ("--grid", entry)]
            + [f"--gin_bindings={binding}" for binding in self.bindings]
            + [f"--sweep_dir={os.path.join(root, self.name)}", f"--parallel={parallel}"])


def run_sweeps(sweeps: Sequence[Sweep], root: str, parallel: int) -> list[str]:
  """Runs each distinct sweep once, in order, from the repo root (as the docs show; `occam-sweep` is run
  as `python -m trainer.experiments.sweep` with this interpreter).

  Returns the names of the sweeps that did not finish every point: a table built from them would
  silently average fewer seeds, so a doc is not written until a rerun (which resumes) completes them.
  """
  seen, failed = set(), []
  for sweep in sweeps:
    if sweep.name in seen:
      continue
    seen.add(sweep.name)
    argv = sweep.argv(root, parallel)
    print(f"== {shlex.join(argv)}", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", sweep_lib.__name__] + argv[1:]
    if subprocess.run(command, cwd=REPO, check=False).returncode:
      failed.append(sweep.name)
  return failed


def wall_time(sweep_dir: str) -> str:
  """Total wall time over the sweep's invocations, and how many point runs they made."""
  invocations = sweep_lib.read_record(sweep_dir)["invocations"]
  seconds = sum(i["wall_seconds"] for i in invocations)
  ran = sum(i["ran"] for i in invocations)
  return (f"{seconds / 60:.1f} min wall for {ran} point runs (failed attempts included) in "
          f"{len(invocations)} invocation(s), --parallel={invocations[-1]['parallel']}")


def machine() -> str:
  """Cores, CPU model, OS, Python and TensorFlow versions, for a doc's header."""
  import tensorflow as tf
  cpu = platform.processor() or "unknown CPU"
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as file:
      cpu = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), cpu)
  return (f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, TensorFlow {tf.__version__}")


def write_doc(path: str, header: str, sections: Sequence[str]) -> int:
  """Writes the doc (header, then the sections) and says so; returns the exit status 0."""
  with open(path, "w") as file:
    file.write(header + "\n" + "\n".join(sections))
  print(f"wrote {path}", file=sys.stderr)
  return 0


def common_arguments(description: str, default_root: str, only_help: str) -> argparse.ArgumentParser:
  """--root, --run, --parallel and --only, as both generators take them."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--root", default=default_root, help="where the sweeps live")
  parser.add_argument("--run", action="store_true", help="run (or resume) the sweeps first")
  parser.add_argument("--parallel", type=int, default=2, help="points trained at once")
  parser.add_argument("--only", default="", help=only_help)
  return parser
