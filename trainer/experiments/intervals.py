r"""The mean over seeds and its 95% confidence interval (Student t), for `occam-report`.

With n seeds of sample standard deviation s (n - 1 in the denominator), the interval is

    mean ± t(n - 1) * s / sqrt(n),    P(|T| < t(n - 1)) = 0.95 for T ~ Student t with n - 1 dof,

i.e. the standard error s / sqrt(n) times t: 12.71 for 2 seeds, 4.30 for 3, 2.78 for 5, 2.26 for 10
(1.96 in the limit). It says how well the mean is known; `± s` would say how far seeds spread. One
seed has no interval (NaN; the report prints `n/a`).

The quantile is exact for whole degrees of freedom: P(|T| < t) has a closed form in
theta = atan(t / sqrt(dof)) (finite sums of powers of cos(theta), Abramowitz & Stegun 26.7.3-4),
which bisection inverts; no SciPy needed.

>>> round(t_quantile(2), 3)
4.303
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

LEVEL = 0.95


def two_sided_probability(t: float, dof: int) -> float:
  """P(|T| < t) for Student's t with `dof` (>= 1) degrees of freedom and t >= 0."""
  theta = math.atan(t / math.sqrt(dof))
  cos2 = math.cos(theta) ** 2
  term = total = 1.0
  if dof % 2:  # (2/pi) (theta + sin cos [1 + 2/3 cos^2 + (2*4)/(3*5) cos^4 + ...]), up to cos^(dof-2)
    for k in range(1, (dof - 1) // 2):
      term *= cos2 * (2 * k) / (2 * k + 1)
      total += term
    return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if dof > 1 else 0.0))
  for k in range(1, dof // 2):  # sin [1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ...], up to cos^(dof-2)
    term *= cos2 * (2 * k - 1) / (2 * k)
    total += term
  return math.sin(theta) * total


@functools.cache
def t_quantile(dof: int, level: float = LEVEL) -> float:
  """The t with P(|T| < t) = `level` (the two-sided critical value), to float precision."""
  if dof < 1:
    raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
  low, high = 0.0, 2.0
  while two_sided_probability(high, dof) < level:
    low, high = high, 2 * high
  for _ in range(200):
    middle = (low + high) / 2
    if middle in (low, high):
      break
    low, high = (middle, high) if two_sided_probability(middle, dof) < level else (low, middle)
  return (low + high) / 2


def halfwidth(std: float, n: int) -> float:
  """The 95% interval's half-width t(n - 1) * std / sqrt(n) for n values of sample std `std`; NaN if n < 2."""
  if n < 2 or math.isnan(std):
    return math.nan
  return t_quantile(n - 1) * std / math.sqrt(n)


def summarize(values: Sequence[float]) -> tuple[float, float, float]:
  """(mean, sample std, 95% half-width) of `values`; the last two are NaN for a single value."""
  n = len(values)
  mean = math.fsum(values) / n
  std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
  return mean, std, halfwidth(std, n)
