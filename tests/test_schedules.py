"""Learning-rate schedules against their closed forms (numpy), and their argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.loop import schedules


def test_warmup_cosine_matches_closed_form():
  schedule = schedules.WarmupCosine(base_learning_rate=0.2, warmup_steps=10, decay_steps=110,
                                    final_fraction=0.1)
  for step in [0, 1, 5, 9, 10, 11, 60, 109, 110, 500]:
    if step < 10:
      expected = 0.2 * step / 10
    else:
      progress = min(1.0, (step - 10) / 100)
      expected = 0.2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_piecewise_and_constant():
  schedule = schedules.Piecewise(base_learning_rate=1.0, boundaries=[3, 6], multipliers=[0.1, 0.01])
  got = [float(schedule(step)) for step in range(8)]
  np.testing.assert_allclose(got, [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
  assert float(schedules.Constant(0.3)(1234)) == pytest.approx(0.3)
  assert schedules.as_schedule(0.05).base_learning_rate == 0.05


@pytest.mark.parametrize("make, message", [
    (lambda: schedules.Constant(-1.0), "Constant: base_learning_rate must be a finite number >= 0"),
    (lambda: schedules.WarmupCosine(1.0, warmup_steps=10, decay_steps=10), "warmup_steps < decay_steps"),
    (lambda: schedules.Piecewise(1.0, boundaries=[5, 2], multipliers=[0.1, 0.1]), "increasing"),
    (lambda: schedules.as_schedule("fast"), "Trainer.learning_rate must be a number"),
])
def test_bad_schedule_arguments(make, message):
  with pytest.raises((ValueError, TypeError), match=message):
    make()
