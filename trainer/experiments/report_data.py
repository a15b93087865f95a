"""The data of `occam-report`, shared by the report and its figures (`plots`): columns, runs, groups.

A `Column` reduces a run's (step, value) series of one tag to a table value (`final`, `best_max`,
`best_min`); a `Run` is one finished point with its scalars and values; a `Group` is the runs that
differ only in the seed, with their mean, standard deviation and 95% confidence interval, shown as
`cell`s.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

Scalars = dict[str, list[tuple[int, float]]]  # "dir/tag" -> [(step, value), ...], in the order written


@dataclasses.dataclass(frozen=True)
class Column:
  """A table column: `reduce` over the (step, value) series of `tag` in the run's `event_dir`."""
  name: str
  event_dir: str
  tag: str
  reduce: Callable[[list[tuple[int, float]]], float]
  higher_is_better: bool | None = None

  @property
  def label(self) -> str:
    """What the column holds, for an axis: the tag, and 'best' when it is the best over evaluations."""
    return f"best {self.tag}" if self.reduce is not final else self.tag


def final(series: list[tuple[int, float]]) -> float:
  """The last value written at the largest step (a resumed or restored run may log a step twice)."""
  last_step = max(step for step, _ in series)
  return [value for step, value in series if step == last_step][-1]


def best_max(series: list[tuple[int, float]]) -> float:
  return max(value for _, value in series)


def best_min(series: list[tuple[int, float]]) -> float:
  return min(value for _, value in series)


@dataclasses.dataclass
class Run:
  """One finished point of a sweep: where it is, its bindings, its scalars and table values."""
  sweep: str
  name: str
  bindings: dict[str, str]
  scalars: Scalars
  values: dict[str, float]


@dataclasses.dataclass
class Group:
  """Runs that differ only in the seed: the series they belong to, the strength, and statistics.

  `std` is the sample standard deviation over the runs and `ci` the half-width of the 95% confidence
  interval of the mean (`intervals`); both NaN for a single run.
  """
  series: str
  x: float
  bindings: dict[str, str]
  runs: list[Run]
  mean: dict[str, float]
  std: dict[str, float]
  ci: dict[str, float]

  @property
  def label(self) -> str:
    """The point's name in a legend: its series and strength."""
    parts = ([] if self.series == "all" else [self.series]) + ([] if math.isnan(self.x) else [f"{self.x:g}"])
    return " ".join(parts) or "all"


def cell(group: Group, column: str) -> str:
  """The one way a group's value is shown, in tables and in the docs' text: `mean ± h`, `h` the half-width
  of the 95% confidence interval of the mean over seeds (`n/a` for one seed); empty if no run has it."""
  if column not in group.mean:
    return ""
  spread = group.ci[column]
  return f"{group.mean[column]:.4g} ± {'n/a' if math.isnan(spread) else f'{spread:.2g}'}"
