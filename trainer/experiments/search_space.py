"""The search space of `occam-tune`: its grammar, parsed into `Dimension`s and checked by gin.

`KEY=uniform(LOW, HIGH)`, `KEY=loguniform(LOW, HIGH)`, `KEY=int(LOW, HIGH)` (both ends included) or
`KEY=choice(V1, V2, ...)` (gin values, exactly as typed), from `--space` or one per line of
`--space_file` (`#` starts a comment). `validate` has gin parse the config with every end and choice,
before any trial starts. A `Dimension` asks an Optuna trial for its value and gives it back as gin text.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np

from trainer.experiments import sweep

KINDS = ("uniform", "loguniform", "int", "choice")


class SpaceError(ValueError):
  """A `--space` entry, file or option that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One searched binding: `kind` is uniform, loguniform, int (bounds `low`, `high`) or choice."""
  key: str
  kind: str
  low: float = math.nan
  high: float = math.nan
  choices: tuple[str, ...] = ()

  def suggest(self, trial) -> str:
    """Asks `trial` (an `optuna.Trial`) for this dimension's value; returns it as gin text."""
    if self.kind == "choice":
      return trial.suggest_categorical(self.key, list(self.choices))
    if self.kind == "int":
      return str(trial.suggest_int(self.key, int(self.low), int(self.high)))
    return repr(trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform"))

  def extremes(self) -> list[str]:
    """The gin texts validation tries: both ends of a range, every choice."""
    if self.kind == "choice":
      return list(self.choices)
    if self.kind == "int":
      return [str(int(self.low)), str(int(self.high))]
    return [repr(self.low), repr(self.high)]

  def grid(self, size: int) -> list:
    """`size` values spread over the range (log-spaced for loguniform), or the choices: the grid sampler's."""
    if self.kind == "choice":
      return list(self.choices)
    if self.kind == "int":
      return sorted({int(round(v)) for v in np.linspace(self.low, self.high, size)})
    spread = np.geomspace if self.kind == "loguniform" else np.linspace
    return [float(v) for v in spread(self.low, self.high, size)]


def parse_dimension(entry: str) -> Dimension:
  """'L2.scale=loguniform(1e-6, 1e-1)' -> Dimension; SpaceError naming the entry if it is unusable."""
  match = re.fullmatch(r"\s*([^=\s]+)\s*=\s*(\w+)\s*\((.*)\)\s*", entry, flags=re.DOTALL)
  if not match or match.group(2) not in KINDS:
    raise SpaceError(f"--space {entry!r}: expected KEY=KIND(...) with KIND one of {list(KINDS)}, "
                     "e.g. 'L2.scale=loguniform(1e-6, 1e-1)' or 'MLP.hidden_sizes=choice((64,), (128,))'")
  key, kind, values = match.group(1), match.group(2), sweep.split_top_level(match.group(3))
  if kind == "choice":
    if not values or len(set(values)) != len(values):
      raise SpaceError(f"--space {entry!r}: choice needs distinct values, got {values}")
    return Dimension(key, kind, choices=tuple(values))
  try:
    low, high = (int(v) if kind == "int" else float(v) for v in values)
  except ValueError as error:
    number = "integers" if kind == "int" else "numbers"
    raise SpaceError(f"--space {entry!r}: {kind} needs two {number} (LOW, HIGH), got {values}") from error
  if not low < high:
    raise SpaceError(f"--space {entry!r}: the range is empty (LOW={low} must be below HIGH={high})")
  if kind == "loguniform" and low <= 0:
    raise SpaceError(f"--space {entry!r}: a log range needs positive bounds, LOW={low}")
  return Dimension(key, kind, float(low), float(high))


def parse_space(entries: Sequence[str], space_file: str | None = None) -> list[Dimension]:
  """The dimensions of `--space` entries and the lines of `space_file`, each key at most once."""
  entries = list(entries)
  if space_file:
    try:
      with open(space_file) as file:
        entries += [line.split("#", 1)[0].strip() for line in file]
    except OSError as error:
      raise SpaceError(f"--space_file={space_file}: {error.strerror}") from error
  space = [parse_dimension(entry) for entry in entries if entry]
  if not space:
    raise SpaceError("no search space: give --space KEY=KIND(...) or --space_file")
  keys = [d.key for d in space]
  repeated = sorted({key for key in keys if keys.count(key) > 1})
  if repeated:
    raise SpaceError(f"--space: keys given more than once: {repeated}")
  return space


def validate(gin_files: Sequence[str], bindings: Sequence[str], space: Sequence[Dimension]) -> None:
  """Has gin parse the config with every end and choice of the space (`sweep.validate`'s check)."""
  grid = [(d.key, d.extremes()) for d in space]
  first = sweep.Point(tuple((key, values[0]) for key, values in grid))
  try:
    sweep.validate(gin_files, bindings, grid, [first], flag="--space")
  except sweep.GridError as error:
    raise SpaceError(str(error)) from error
