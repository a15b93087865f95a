"""Smoke test of `scripts/benchmark.py --quick`: it runs end to end and prints every row of its table.

No timing is asserted: the quick run's numbers are meaningless (tiny models, one repeat) and the
machine is shared. What is checked is that every section and row is there and that every ratio or
figure it prints is a finite positive number (or "n/a" where Occam lacks the feature).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

from tests.helpers import REPO

# (section, start of the "what" cell) of every row the benchmark prints.
EXPECTED_ROWS = [
    ("startup", "process start -> first train step logged"),
    ("startup", "whole 2-step quickstart run"),
    ("startup", "peak RSS of that run"),
    *[(model, what) for model in ("compute", "dispatch") for what in (
        "occam / bare loop (no jit)", "occam / fit spe=", "occam / fit spe=1 (no jit)",
        "occam / bare loop (jit)", "occam / fit spe=1 (jit)", "bare loop / fit spe=",
        "bare loop: jit / no jit")],
    ("flops", "tf.matmul peak"),
    ("flops", "occam"),
    *[(f"{model} costs", what) for model in ("compute", "dispatch") for what in (
        "regularizer L2", "regularizer L1", "regularizer DecoupledWeightDecay", "regularizer ProximalL1",
        "regularizer L2 + DecoupledWeightDecay + ProximalL1", "regularizer L2 + DecoupledWeightDecay + ProximalL1 (jit)",
        "built-in metric accumulators",
        "default Monitor metric set")],
    ("scaling", "all terms at width"),
    ("replicas", "compute: 2 replicas"),
    ("replicas", "dispatch: 2 replicas"),
]
NUMBER = re.compile(r"^([+-]?[\d,]+(?:\.\d+)?)(x|%| s| MiB| GFLOP/s)$")


def _table(output: str) -> list[list[str]]:
  """The table rows (`section | what | wall | cpu | detail`) between the column header and the targets."""
  table = output[output.index("\nsection "):output.index("\nTargets")]
  return [[cell.strip() for cell in line.split("|")] for line in table.splitlines()[2:] if line.count("|") >= 4]


def test_quick_run_prints_every_row_with_finite_figures():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--quick"],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout[-3000:]
  rows = _table(result.stdout)
  for section, what in EXPECTED_ROWS:
    assert any(row[0] == section and row[1].startswith(what) for row in rows), (section, what)
  for section, what, wall, cpu, _ in rows:
    for figure in [wall] + ([cpu] if cpu else []):  # Startup and memory rows have no cpu figure.
      _check_figure(section, what, figure)
  assert re.search(r"^(PASS|FAIL) \(cpu: (PASS|FAIL)\) compute: occam >= 0.9x bare loop \(no jit\)",
                   result.stdout, re.M)


def _check_figure(section: str, what: str, figure: str) -> None:
  """A finite number with its unit, positive unless it is a cost; "n/a" only for optional features."""
  if figure == "n/a":  # Only for what a checkout may lack: Trainer.jit_compile, Trainer.monitor.
    assert "jit" in what or "Monitor" in what, (section, what)
    return
  match = NUMBER.match(figure)
  assert match, f"{section} | {what}: {figure!r} is not a number"
  value = float(match.group(1).replace(",", ""))
  assert math.isfinite(value), (section, what, figure)
  # Costs are (ratio - 1) and may be negative in noise; every other figure is a positive quantity.
  assert value > 0 or figure.startswith(("+", "-")), (section, what, figure)
