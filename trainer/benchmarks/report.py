"""The benchmark's table (`section | what | wall | cpu | detail`) and its target verdicts.

Each row is printed as it is measured (so a long run shows progress) and again in the final table.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from trainer.benchmarks.timing import Variant


def show_ratio(value: float) -> str:
  return f"{value:.2f}x"


def show_cost(value: float) -> str:
  return f"{value:+.1%}"


def show_percent(value: float) -> str:
  return f"{value:.0%}"


def show_gflops(value: float) -> str:
  return f"{value / 1e9:.1f} GFLOP/s"


def show_seconds(value: float) -> str:
  return f"{value:.2f} s"


def show_signed_seconds(value: float) -> str:
  return f"{value:+.2f} s"


def rates(*variants: Variant) -> str:
  """The variants' wall-clock steps/s side by side, for a row's detail."""
  return " vs ".join(f"{v.rate[0]:,.1f}" for v in variants) + " steps/s (wall)"


@dataclasses.dataclass
class Report:
  """Rows of the table and the target verdicts.

  A figure is a [wall, cpu] pair (`Variant.rate` ratios) or a single string (memory and the like,
  which only have one figure).
  """

  rows: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
  targets: list[str] = dataclasses.field(default_factory=list)

  def add(self, section: str, what: str, value: np.ndarray | str, detail: str = "", *,
          show: Callable[[float], str] = show_ratio) -> None:
    cells = (value, "") if isinstance(value, str) else (show(value[0]), show(value[1]))
    self.rows.append((section, what, *cells, detail))
    print(f"  [{section}] {what}: wall {cells[0]}, cpu {cells[1]} {detail}", flush=True)

  def target(self, name: str, value: np.ndarray, threshold: float, *, at_most: bool = False,
             show: Callable[[float], str] = show_ratio) -> None:
    """`PASS`/`FAIL` by wall time (what the target is about), with the CPU-time verdict beside it."""
    verdicts = ["PASS" if (v <= threshold if at_most else v >= threshold) else "FAIL" for v in value]
    self.targets.append(f"{verdicts[0]} (cpu: {verdicts[1]}) {name}: wall {show(value[0])}, "
                        f"cpu {show(value[1])} (target {'<=' if at_most else '>='} {show(threshold)})")

  def print(self, header: Sequence[str]) -> None:
    columns = ("section", "what", "wall", "cpu")
    widths = [max(len(row[i]) for row in [columns, *self.rows]) for i in range(len(columns))]
    print("\n" + "\n".join(header) + "\n")
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " | detail")
    section = None
    for row in self.rows:
      if row[0] != section:
        section = row[0]
        print()
      print(" | ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + " | " + row[4])
    print("\nTargets (verdict by wall time; cpu: the same target judged by CPU time):")
    print("\n".join(self.targets))
