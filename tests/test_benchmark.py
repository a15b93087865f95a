"""Smoke test of `scripts/benchmark.py --quick`: it runs end to end and prints every row of its table.

No timing is asserted: the quick run's numbers are meaningless (a tiny model, one repeat) and the
machine is shared. What is checked is that every row of the sections `--quick` runs is there, that
no other row is, and that every ratio or figure it prints is a finite number (positive unless it is
a cost). `--quick` builds each of the script's code paths once: Occam through `TrainRunner` on one
and on two replicas, with and without the Monitor, the bare loop, `fit` at both steps_per_execution,
the matmul peak and the scaling section's extra width. It leaves out the XLA variants, the
dispatch-bound model and the other term sets (the same code with other bindings) and the startup
section (a second TensorFlow process).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]  # `scripts/benchmark.py --quick`: ~20 s

# (section, what) of every row `--quick` prints, in order; "what" without the suffixes that depend on
# the machine (" = fit default") or on the sizes (" (N parameters)").
EXPECTED_ROWS = [
    ("compute", "occam / bare loop (no jit)"),
    ("compute", "occam / fit spe=2 (no jit)"),
    ("compute", "occam / fit spe=1 (no jit)"),
    ("compute", "bare loop / fit spe=2 (no jit)"),
    ("compute", "bare loop / fit spe=1 (no jit)"),
    ("flops", "tf.matmul peak (float32)"),
    ("flops", "occam step"),
    ("flops", "occam step / peak"),
    ("flops", "bare jit=False step"),
    ("flops", "bare jit=False step / peak"),
    ("compute costs", "regularizer L2"),
    ("compute costs", "regularizer L2 + DecoupledWeightDecay + ProximalL1"),
    ("compute costs", "default Monitor metric set (per-loop statistics)"),
    ("scaling", "all terms at width 32"),
    ("scaling", "all terms at width 64"),
    ("compute sam", "SAM step time / plain step time"),
    ("replicas", "compute: 2 replicas (Mirrored) / 1 replica (default)"),
]
EXPECTED_TARGETS = [
    "compute: occam >= 0.9x bare loop (no jit)",
    "compute: occam >= 1.2x fit spe=2 (no jit)",
    "compute: occam step >= 70% of matmul peak",
    "compute: all regularization terms cost <= 5%",
    "compute: default metric set (Monitor) costs <= 5%",
]
NUMBER = re.compile(r"^([+-]?[\d,]+(?:\.\d+)?)(x|%| GFLOP/s)$")


def _table(output: str) -> list[list[str]]:
  """The table rows (`section | what | wall | cpu | detail`) between the column header and the targets."""
  table = output[output.index("\nsection "):output.index("\nTargets")]
  return [[cell.strip() for cell in line.split("|")] for line in table.splitlines()[2:]
          if line.count("|") >= 4]


def _row_key(row: list[str]) -> tuple[str, str]:
  """(section, what) without the suffixes that depend on the machine or the sizes."""
  return row[0], re.sub(r" = fit default$| \([\d,]+ parameters\)$", "", row[1])


def test_quick_run_prints_every_row_with_finite_figures():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--quick"],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout[-3000:]
  rows = _table(result.stdout)
  assert [_row_key(row) for row in rows] == EXPECTED_ROWS
  for section, what, wall, cpu, _ in rows:
    for figure in (wall, cpu):
      _check_figure(section, what, figure)
  targets = result.stdout[result.stdout.index("\nTargets"):].splitlines()[2:]
  assert len(targets) == len(EXPECTED_TARGETS), targets
  for line, name in zip(targets, EXPECTED_TARGETS):
    verdict = rf"(PASS|FAIL) \(cpu: (PASS|FAIL)\) {re.escape(name)}: wall \S+, cpu \S+ \(target "
    assert re.match(verdict, line), line


def _check_figure(section: str, what: str, figure: str) -> None:
  """A finite number with its unit, positive unless it is a cost (`--quick` has no startup rows)."""
  match = NUMBER.match(figure)
  assert match, f"{section} | {what}: {figure!r} is not a number"
  value = float(match.group(1).replace(",", ""))
  assert math.isfinite(value), (section, what, figure)
  # Costs are (ratio - 1) and may be negative in noise; every other figure is a positive quantity.
  assert value > 0 or figure.startswith(("+", "-")), (section, what, figure)
