"""The benchmarks (`trainer.benchmarks`) and their thin scripts: structure, never timings.

No timing is asserted: the machine is shared and `--quick` numbers are meaningless. What is checked:
variants are timed side by side (one warm-up each, then interleaved rounds) and their rates are the
work over the median time; ratios and costs are what their definitions say; the throughput table has
every section `--quick` runs, each row's figures are finite numbers (positive unless a cost) computed
from the two variants printed beside them; the child programs print the markers the startup section
times and report their peak memory; bad command lines exit with status 2 naming the culprit.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO
from trainer.benchmarks import startup, throughput, timing
from trainer.benchmarks.children import time_child
from trainer.benchmarks.mlp import ModelSpec

# The sections `--quick` prints, in order: its one (compute-bound) model's rows, then the others.
QUICK_TABLE_SECTIONS = ["compute", "flops", "compute costs", "scaling", "compute sam", "replicas"]
NUMBER = re.compile(r"^([+-]?[\d,]+(?:\.\d+)?)(x|%| GFLOP/s)$")
SIDE_BY_SIDE = re.compile(r"^([\d,]+\.\d) vs ([\d,]+\.\d) steps/s \(wall\)")
VERDICT = re.compile(r"^(PASS|FAIL) \(cpu: (PASS|FAIL)\) (.+): wall (\S+), cpu (\S+) "
                     r"\(target (>=|<=) (\S+)\)$")


def _measured(log: list[str], name: str, seconds: list[list[float]]):
  """A `Variant.measure` that logs its calls and returns the given [wall, cpu] seconds in turn."""
  times = iter(seconds)

  def measure() -> np.ndarray:
    log.append(name)
    return np.array(next(times))

  return measure


def test_variants_are_timed_interleaved_after_one_warm_up_each_and_rated_by_their_median():
  log: list[str] = []
  a = timing.Variant("a", _measured(log, "a", [[9, 9], [1.0, 2.0], [3.0, 1.0], [2.0, 4.0]]), work=12)
  b = timing.Variant("b", _measured(log, "b", [[9, 9], [4.0, 4.0], [6.0, 8.0], [5.0, 2.0]]), work=12)
  timing.time_interleaved([a, b], repeats=3)
  assert log == ["a", "b"] * 4  # the warm-up round, then three timed rounds A B A B A B
  np.testing.assert_allclose(a.rate, [12 / 2.0, 12 / 2.0])  # medians of [1, 3, 2] and [2, 1, 4]
  np.testing.assert_allclose(b.rate, [12 / 5.0, 12 / 4.0])
  np.testing.assert_allclose(timing.ratio(a, b), [2.5, 2.0])  # a does a step in 2/5 of b's wall time
  np.testing.assert_allclose(timing.cost(b, a), [5.0 / 2.0 - 1, 4.0 / 2.0 - 1])  # time with / without - 1


def test_repeated_times_all_its_calls_as_one_measurement():
  calls = []
  seconds = timing.repeated(lambda: calls.append(1), 3)()
  assert len(calls) == 3 and seconds.shape == (2,) and np.all(seconds >= 0)


def test_model_spec_counts_the_parameters_of_the_model_it_describes():
  import models
  spec = ModelSpec("compute", 784, (64, 32), 16, steps_per_loop=2, loops_per_measurement=3)
  model = models.MLP(hidden_sizes=spec.hidden, num_outputs=10)
  model(np.zeros((1, spec.input_dim), np.float32))
  assert spec.parameters == model.count_params()
  assert spec.steps_per_measurement == 6
  # 3 x (forward matmuls): 2 * batch * (784*64 + 64*32 + 32*10)
  assert spec.training_flops() == 3 * 2 * 16 * (784 * 64 + 64 * 32 + 32 * 10)
  assert spec.with_width(8).hidden == (8, 8)


@pytest.mark.parametrize("settings", [throughput.QUICK, throughput.FULL], ids=["quick", "full"])
def test_every_comparison_is_among_the_variants_timed_together(settings):
  """A ratio compares two variants of one group, and a group is timed in one interleaved run."""
  spec = settings.compute
  needed = set(throughput.variants_needed(spec, settings, throughput.SECTIONS))
  for jit in settings.jit:
    loops = {throughput.with_jit(name, jit) for name in ("occam", "bare", "fit loop", "fit step")}
    assert loops <= needed
  others = {"no regularizer", "monitor off", "2 replicas", "peak", *settings.term_sets, *settings.sam_sets}
  assert others <= needed
  # The dispatch-bound model has neither the flops nor the scaling section.
  if settings.dispatch is not None:
    assert "peak" not in throughput.variants_needed(settings.dispatch, settings, throughput.SECTIONS)


def test_an_unknown_section_exits_with_status_2_naming_it(capsys):
  with pytest.raises(SystemExit) as exit_info:
    throughput.main(["--quick", "--sections=costs,bogus"])
  assert exit_info.value.code == 2
  assert "'costs,bogus'" in capsys.readouterr().err


def _table(output: str) -> list[list[str]]:
  """The table rows (`section | what | wall | cpu | detail`) between the column header and the targets."""
  table = output[output.index("\nsection "):output.index("\nTargets")]
  return [[cell.strip() for cell in line.split("|")] for line in table.splitlines()[2:]
          if line.count("|") >= 4]


def _number(figure: str) -> float:
  match = NUMBER.match(figure)
  assert match, f"{figure!r} is not a number with a unit"
  value = float(match.group(1).replace(",", ""))
  assert math.isfinite(value), figure
  return value / 100 if match.group(2) == "%" else value


@pytest.mark.slow
@pytest.mark.multiprocess
def test_quick_run_prints_every_section_with_finite_figures_from_variants_side_by_side():
  """`scripts/benchmark.py --quick` (the thin script over `throughput`): ~1 minute on 2 busy cores."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--quick"],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stdout[-3000:]
  rows = _table(result.stdout)
  assert list(dict.fromkeys(row[0] for row in rows)) == QUICK_TABLE_SECTIONS
  for section, what, wall, cpu, detail in rows:
    figures = [_number(wall), _number(cpu)]
    is_cost = wall.startswith(("+", "-"))
    # Costs are (time with / without - 1) and may be negative in noise; every other figure is positive.
    assert is_cost or min(figures) > 0, (section, what, wall, cpu)
    pair = SIDE_BY_SIDE.match(detail)
    if pair:  # the two variants the row compares, measured in the same interleaved run
      first, second = (float(rate.replace(",", "")) for rate in pair.groups())
      expected = second / first - 1 if is_cost else first / second
      if "sam" in section:  # SAM's row is plain / SAM (its time over the plain step's), printed SAM first
        expected = second / first
      # Rates are printed to 0.1 steps/s, ratios to 0.01 and costs to 0.1%: a few percent of slack.
      assert figures[0] == pytest.approx(expected, rel=0.03, abs=0.011), (section, what, wall, detail)
  assert sum(1 for row in rows if SIDE_BY_SIDE.match(row[4])) >= len(QUICK_TABLE_SECTIONS) - 1
  targets = result.stdout[result.stdout.index("\nTargets"):].splitlines()[2:]
  assert targets
  for line in targets:
    match = VERDICT.match(line)
    assert match, line
    wall, threshold, at_most = _number(match.group(4)), _number(match.group(7)), match.group(6) == "<="
    passed = wall <= threshold if at_most else wall >= threshold
    if wall != threshold:  # (printed rounded: at the threshold itself the verdict is the unrounded one's)
      assert match.group(1) == ("PASS" if passed else "FAIL"), line


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fit_child_program_prints_the_startup_markers_in_order():
  """The startup section's reference child (`python -m trainer.benchmarks.fit_quickstart`): one process."""
  seen, total = time_child(startup.FIT_COMMAND, startup.FIT_MARKERS)
  assert seen.shape == (len(startup.PHASES), 2)
  assert np.all(np.diff(seen[:, 0]) >= 0) and seen[-1, 0] <= total


@pytest.mark.multiprocess
def test_peak_rss_child_runs_the_module_and_writes_its_peak_memory(tmp_path):
  peak_file, document = tmp_path / "peak", tmp_path / "in.json"
  document.write_text('{"b": [1, 2]}')
  env = dict(os.environ, PYTHONPATH=REPO)
  command = [sys.executable, "-m", "trainer.benchmarks.peak_rss", str(peak_file)]
  result = subprocess.run([*command, "json.tool", "--sort-keys", str(document)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout) == {"b": [1, 2]}  # the module ran, with its arguments passed through
  assert int(peak_file.read_text()) > 1024  # KiB: a Python interpreter holds more than 1 MiB
  usage = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert usage.returncode == 2 and "PEAK_FILE MODULE" in usage.stderr


@pytest.mark.slow
def test_monitor_overhead_times_the_default_monitor_against_one_that_computes_nothing(capsys):
  """`scripts/metrics_overhead.py`'s machinery on the quickstart, one short run of each kind."""
  from trainer.benchmarks import monitor_overhead
  assert monitor_overhead.main(["--repeats=1", "--warmup_steps=1", "--steps=20"]) == 0
  output = capsys.readouterr().out
  for name in ("default", "off"):
    line = rf"^{name}: median [\d.]+s, fastest [\d.]+s over 20 steps; runs [\d.]+$"
    assert re.search(line, output, re.M), output
  overhead = r"^A/B overhead of the default metric set \((median|fastest)\): [+-][\d.]+%$"
  assert re.findall(overhead, output, re.M) == ["median", "fastest"], output
  fraction = re.search(r"^time in Monitor calls / rest of the run: median ([\d.]+)%; runs [\d.]+%$", output,
                       re.M)
  assert fraction and math.isfinite(float(fraction.group(1))), output


@pytest.mark.multiprocess
def test_a_failed_child_raises_with_its_command_status_and_output():
  command = [sys.executable, "-m", "trainer.benchmarks.peak_rss"]  # no arguments: usage, status 2
  with pytest.raises(RuntimeError, match=r"-m trainer.benchmarks.peak_rss failed \(2\) or lacked \['never'\]"
                     r"(.|\n)*PEAK_FILE MODULE"):
    time_child(command, ["never"])
