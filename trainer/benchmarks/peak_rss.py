"""Runs a module as `python -m MODULE ARGS` would, and writes the process's peak resident memory on exit.

    python -m trainer.benchmarks.peak_rss PEAK_FILE MODULE [ARGS...]

PEAK_FILE receives the peak in KiB: VmHWM of this process's address space, read from /proc as it
exits (Linux). `ru_maxrss` of the child as seen by a parent would not do: Linux carries the forking
parent's resident size over into the child's maximum. The data-at-scale benchmark
(`trainer.benchmarks.data_scale`) runs `trainer.main` under it.
"""

from __future__ import annotations

import atexit
import re
import runpy
import sys


def peak_kib() -> int:
  """This process's peak resident set size so far (VmHWM), in KiB."""
  with open("/proc/self/status") as status:
    return int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    print("usage: python -m trainer.benchmarks.peak_rss PEAK_FILE MODULE [ARGS...]", file=sys.stderr)
    sys.exit(2)
  peak_file, module, *args = argv

  def report() -> None:
    with open(peak_file, "w") as file:
      file.write(str(peak_kib()))

  atexit.register(report)
  sys.argv = [module, *args]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main(sys.argv[1:])
