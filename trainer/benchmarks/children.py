"""Benchmarks that time child processes: run one, timing the output lines that mark its progress."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from typing import Sequence

import numpy as np

# The checkout the children run in (gin_configs/ is read from there).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_seconds(pid: int) -> float:
  """CPU seconds (user + system, all threads) the running process `pid` has used so far; NaN where
  /proc is missing (not Linux)."""
  try:
    with open(f"/proc/{pid}/stat") as file:
      fields = file.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
  except OSError:
    return math.nan
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def time_child(command: Sequence[str], markers: Sequence[str]) -> tuple[np.ndarray, float]:
  """Runs `command` from the repo root: ([wall, cpu] seconds from process start to the first output line
  matching each of `markers`, in order, shape [markers, 2]; wall seconds to exit). Lines are timed when
  they arrive (stderr is unbuffered); the CPU time is the child's own, read from /proc at that moment,
  so it is nearly immune to other processes' load. A failed child, or one that lacks a marker, raises
  `RuntimeError` with the end of its output."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  started = time.perf_counter()
  seen: list[tuple[float, float]] = []
  output = []
  with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as child:
    for line in child.stdout:
      output.append(line)
      if len(seen) < len(markers) and re.search(markers[len(seen)], line):
        seen.append((time.perf_counter() - started, cpu_seconds(child.pid)))
  total = time.perf_counter() - started
  if child.returncode or len(seen) < len(markers):
    raise RuntimeError(f"{' '.join(command[1:])} failed ({child.returncode}) or lacked "
                       f"{list(markers[len(seen):])}:\n" + "".join(output[-20:]))
  return np.array(seen), total
