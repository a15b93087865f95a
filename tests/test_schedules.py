"""Learning-rate schedules against their closed forms (numpy) and Keras' own values, their argument checks,
and schedules that follow the run's length (also across a resume with a longer `Trainer.train_steps`)."""

from __future__ import annotations

import logging
import math
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from trainer.config import registry
from trainer.loop import schedules
from trainer.regularization import terms as terms_lib

KERAS = tf.keras.optimizers.schedules


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
  assert schedules.for_run(0.05, 100).base_learning_rate == 0.05


@pytest.mark.parametrize("make, message", [
    (lambda: schedules.Constant(-1.0), "Constant: base_learning_rate must be a finite number >= 0"),
    (lambda: schedules.WarmupCosine(1.0, warmup_steps=10, decay_steps=10), "warmup_steps < decay_steps"),
    (lambda: schedules.Piecewise(1.0, boundaries=[5, 2], multipliers=[0.1, 0.1]), "increasing"),
    (lambda: schedules.for_run("fast", 100), "Trainer.learning_rate must be a number"),
    (lambda: schedules.WarmupCosine()(3), "WarmupCosine.decay_steps is unset"),
    (lambda: schedules.OneCycle(warmup_fraction=1.0), "OneCycle.warmup_fraction must be in"),
    (lambda: schedules.InverseSquareRoot(warmup_steps=0), "InverseSquareRoot: warmup_steps"),
])
def test_bad_schedule_arguments(make, message):
  with pytest.raises((ValueError, TypeError), match=message):
    make()


def test_schedules_with_a_length_follow_the_run_unless_bound():
  followed = schedules.for_run(schedules.WarmupCosine(0.2, warmup_steps=10, final_fraction=0.1), 110)
  explicit = schedules.WarmupCosine(0.2, warmup_steps=10, decay_steps=110, final_fraction=0.1)
  assert followed.decay_steps == 110
  np.testing.assert_array_equal([float(followed(t)) for t in range(0, 130, 7)],
                                [float(explicit(t)) for t in range(0, 130, 7)])
  assert schedules.for_run(explicit, 500) is explicit  # a bound length is the user's decision
  assert schedules.for_run(schedules.OneCycle(), 300).total_steps == 300
  warming = schedules.for_run(schedules.WarmupCosine(1.0, warmup_steps=100), 40)  # a smoke run: warmup only
  assert warming.decay_steps == 101 and float(warming(39)) == pytest.approx(0.39)


def test_a_schedule_that_ends_before_the_run_warns():
  bound = schedules.WarmupCosine(1.0, warmup_steps=10, decay_steps=2000)
  message = schedules.ended_early_warning(bound, 3000)
  assert "ends at step 2000" in message and "the last 1000 steps run at its final rate 0" in message
  assert schedules.ended_early_warning(bound, 2000) is None
  assert schedules.ended_early_warning(schedules.for_run(schedules.WarmupCosine(), 3000), 3000) is None
  keras_cosine = KERAS.CosineDecay(0.1, decay_steps=50, warmup_target=1.0, warmup_steps=10)
  assert "ends at step 60" in schedules.ended_early_warning(keras_cosine, 100)
  assert "ends at step 40" in schedules.ended_early_warning(KERAS.PolynomialDecay(1.0, 40, 0.01), 100)
  assert schedules.ended_early_warning(KERAS.PolynomialDecay(1.0, 40, 0.01, cycle=True), 100) is None
  assert schedules.ended_early_warning(schedules.Piecewise(1.0, [10], [0.1]), 100) is None


def test_inverse_square_root_matches_its_closed_form():
  rsqrt = schedules.InverseSquareRoot(0.5, warmup_steps=16)
  for step in [0, 1, 8, 16, 64, 400]:
    expected = 0.5 * step / 16 if step < 16 else 0.5 * math.sqrt(16 / step)
    assert float(rsqrt(step)) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def _cosine(start: float, end: float, progress):
  """Both references' cosine annealing from `start` (progress 0) to `end` (progress 1)."""
  return end + (start - end) / 2 * (np.cos(np.pi * progress) + 1)


def _optax_one_cycle(steps: np.ndarray, total: int, peak: float, fraction: float, div: float,
                     final_div: float) -> np.ndarray:
  """optax's `cosine_onecycle_schedule`, written out: `piecewise_interpolate_schedule('cosine', peak /
  div, {int(fraction * total): div, total: 1 / (div * final_div)})`, i.e. boundaries [0, P, T] with the
  values' running product, the interval containing the step interpolated, the last value past T."""
  bounds = np.array([0, int(fraction * total), total], np.float64)
  values = np.cumprod([peak / div, div, 1 / (div * final_div)])
  rates = []
  for count in steps:
    inside = (bounds[:-1] <= count) & (count < bounds[1:])
    progress = (count - bounds[:-1]) / (bounds[1:] - bounds[:-1])
    rates.append(inside @ _cosine(values[:-1], values[1:], progress) + (bounds[-1] <= count) * values[-1])
  return np.array(rates)


def _pytorch_one_cycle(steps: np.ndarray, total: int, peak: float, fraction: float, div: float,
                       final_div: float) -> np.ndarray:
  """PyTorch's `OneCycleLR(anneal_strategy='cos', three_phase=False)` rate, written out: phases ending at
  steps `float(fraction * total) - 1` (initial -> max) and `total - 1` (max -> min); a step belongs to the
  first phase whose end it does not pass (or to the last), progress counted from the previous end."""
  initial = peak / div
  phases = [(float(fraction * total) - 1, initial, peak), (total - 1, peak, initial / final_div)]
  rates = []
  for step in steps:
    start_step = 0.0
    for index, (end_step, high, low) in enumerate(phases):
      if step <= end_step or index == len(phases) - 1:
        rates.append(_cosine(high, low, (step - start_step) / (end_step - start_step)))
        break
      start_step = end_step
  return np.array(rates)


@pytest.mark.parametrize("total, fraction", [(100, 0.3), (37, 0.3), (7, 0.25), (50, 0.05)],
                         ids=["whole-peak", "fractional-peak", "short", "peak-at-1"])
@pytest.mark.parametrize("convention", ["optax", "pytorch"])
def test_one_cycle_equals_its_reference_formula_step_by_step(convention, total, fraction):
  """Every step of the cycle against optax's or PyTorch's formula in float64, within 1e-5 relative or 1e-7
  absolute (5e-8 of the peak: float32's cosine near -1); past the cycle the rate stays final (PyTorch
  refuses those steps)."""
  cycle = schedules.OneCycle(2.0, total_steps=total, warmup_fraction=fraction, div_factor=25,
                             final_div_factor=1e4, convention=convention)
  reference = _optax_one_cycle if convention == "optax" else _pytorch_one_cycle
  steps = np.arange(cycle.end_step + 1)
  expected = reference(steps, total, 2.0, fraction, 25, 1e4)
  got = np.array([float(cycle(step)) for step in steps])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  peak_step = int(fraction * total) if convention == "optax" else fraction * total - 1
  assert expected.argmax() in {max(0, math.floor(peak_step)), max(0, math.ceil(peak_step))}
  assert expected[-1] == pytest.approx(2.0 / 25 / 1e4)
  assert [float(cycle(cycle.end_step + k)) for k in (1, 50)] == [float(cycle(cycle.end_step))] * 2


def test_one_cycle_conventions_differ_where_the_references_do():
  """The peak and the floor one step apart; a fractional fraction * T moves the optax peak to its floor."""
  optax, pytorch = (schedules.OneCycle(1.0, total_steps=37, convention=c) for c in ("optax", "pytorch"))
  assert (optax.end_step, pytorch.end_step) == (37, 36)
  assert float(optax(11)) == pytest.approx(1.0) and float(pytorch(11)) < 1.0  # optax peaks at int(11.1)
  with pytest.raises(ValueError, match="OneCycle.convention='keras' is not one of"):
    schedules.OneCycle(convention="keras")


@pytest.mark.parametrize("schedule, base", [
    (KERAS.CosineDecay(0.5, decay_steps=100, alpha=0.1), 0.5),
    (KERAS.CosineDecay(0.0, decay_steps=100, warmup_target=0.8, warmup_steps=10), 0.8),
    (KERAS.CosineDecayRestarts(0.4, first_decay_steps=20), 0.4),
    (KERAS.ExponentialDecay(0.3, decay_steps=10, decay_rate=0.5), 0.3),
    (KERAS.InverseTimeDecay(0.3, decay_steps=10, decay_rate=0.5), 0.3),
    (KERAS.PiecewiseConstantDecay([10, 20], [0.1, 0.5, 0.01]), 0.5),
    (KERAS.PolynomialDecay(0.2, decay_steps=50, end_learning_rate=0.0, power=1.0), 0.2),
])
def test_keras_schedules_are_accepted_with_the_stated_base_rate(schedule, base):
  scaled = schedules.Scaled(schedules.for_run(schedule, 1000))
  assert scaled.schedule is schedule
  assert scaled.base_learning_rate == pytest.approx(base)
  for step in [0, 5, 15, 60, 200]:
    assert float(scaled(step)) == pytest.approx(float(schedule(step)), rel=1e-6)
  # 'schedule_multiplier' decay divides by that base: multiplier 1 at the peak.
  decay = terms_lib.DecoupledWeightDecay(rate=0.1, convention="schedule_multiplier")
  assert float(decay.effective_decay(scaled(60), scaled.base_learning_rate)) == pytest.approx(
      float(schedule(60)) / base * 0.1, rel=1e-6)


def test_keras_schedules_are_gin_configurable():
  registry.register_all()
  gin.parse_config(["PiecewiseConstantDecay.boundaries = [10]",
                    "PiecewiseConstantDecay.values = [0.1, 0.01]"])
  schedule = gin.get_configurable("PiecewiseConstantDecay")()
  assert isinstance(schedule, KERAS.PiecewiseConstantDecay)
  assert float(schedule(11)) == pytest.approx(0.01)


def _learning_rates(model_dir: str) -> dict[int, float]:
  return dict(helpers.read_scalars(os.path.join(model_dir, "train"))["optimizer/learning_rate"])


def test_a_keras_schedule_drives_a_real_run(tmp_path):
  keras_schedule = KERAS.PiecewiseConstantDecay([100], [3e-3, 3e-4])
  helpers.train_in_process(str(tmp_path), [*helpers.FAST, "Trainer.learning_rate = @PiecewiseConstantDecay()",
                                           "PiecewiseConstantDecay.boundaries = [100]",
                                           "PiecewiseConstantDecay.values = [3e-3, 3e-4]"])
  for step, rate in _learning_rates(str(tmp_path)).items():  # logged: the rate of the loop's last step
    assert rate == pytest.approx(float(keras_schedule(step - 1)), rel=1e-6)


def test_the_readme_resume_decays_over_the_new_train_steps_without_a_warning(tmp_path, caplog):
  """The quickstart leaves decay_steps unbound: resuming with more train_steps decays over all of them."""
  model_dir = str(tmp_path)
  helpers.train_in_process(model_dir, helpers.FAST)  # 200 steps
  with caplog.at_level(logging.WARNING):
    helpers.train_in_process(model_dir, [*helpers.FAST, "Trainer.train_steps=300"])
  assert "ends at step" not in caplog.text
  longer = schedules.WarmupCosine(3e-3, warmup_steps=100, decay_steps=300)
  rates = _learning_rates(model_dir)
  assert rates[250] == pytest.approx(float(longer(249)), rel=1e-5) and rates[250] > 0


def test_a_bound_length_shorter_than_the_run_warns_at_start(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    helpers.train_in_process(str(tmp_path), [*helpers.FAST, "WarmupCosine.decay_steps = 150"])
  warnings = [r.getMessage() for r in caplog.records if "ends at step 150" in r.getMessage()]
  assert len(warnings) == 1 and "Trainer.train_steps=200" in warnings[0]
