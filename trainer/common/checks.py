"""Argument checks with one wording: a failed check names its owner, the argument and the value.

Configurables validate their arguments when they are built, before anything is written, and the
message says which gin binding to fix (`L2: scale must be a finite number >= 0, got -1.0`).
"""

from __future__ import annotations

import math
import numbers


def nonnegative(owner: str, argument: str, value) -> float:
  """`value` as a float if it is a finite real number >= 0; else ValueError naming owner and argument."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
    raise ValueError(f"{owner}: {argument} must be a finite number >= 0, got {value!r}")
  return float(value)


def positive(owner: str, argument: str, value) -> float:
  """`value` as a float if it is a finite real number > 0; else ValueError naming owner and argument."""
  if nonnegative(owner, argument, value) == 0:
    raise ValueError(f"{owner}: {argument} must be > 0, got {value!r}")
  return float(value)


# The largest step count: the compiled loop counts steps in int32 (2**31 - 1 steps is far beyond any run).
MAX_COUNT = 2**31 - 1


def integer(owner: str, argument: str, value, *, minimum: int, maximum: int = MAX_COUNT) -> int:
  """`value` as an int if it is a whole number in [`minimum`, `maximum`] (1.0 counts, 1.5 does not)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
      or not float(value).is_integer() or not minimum <= value <= maximum:
    raise ValueError(f"{owner}: {argument} must be an integer >= {minimum} and <= {maximum}, got {value!r}")
  return int(value)
