"""`occam-report` over seeds: the 95% interval, the table, test accuracy at the best step, the plots.

The sweeps here are real event files written with `tf.summary` and laid out as `occam-sweep` lays out
its points, holding values drawn from a seeded RNG, so every number the report shows is checked
against numpy/SciPy on the values written. The end-to-end sweep (trained by the real commands) is
tests/test_sweep.py's; the event reader is checked against TensorBoard's there and below.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tests.helpers import MAIN_LANE_ONLY, REPO, server_scalars
from trainer.experiments import event_files, intervals, plots, report, sweep
from trainer.metrics import summaries

pytestmark = MAIN_LANE_ONLY

STRENGTHS = ("0", "1e-3", "1e-2")
STEPS = (10, 20, 30)
DPI, FONT_SIZE = 40, 12  # small images, a font size other than the default


@dataclasses.dataclass(frozen=True)
class Written:
  """One point's written series: eval and train_eval accuracy per step, test accuracies at the end."""
  eval_acc: np.ndarray
  train_eval_acc: np.ndarray
  test_acc: float
  test_acc_at_best: float

  @property
  def best_step(self) -> int:
    return STEPS[int(np.argmax(self.eval_acc))]  # the first maximum, as early stopping keeps it


def _f32(values) -> np.ndarray:
  """What a float32 summary reads back as."""
  return np.asarray(values, np.float32).astype(np.float64)


def write_sweep(sweep_dir: str, seeds: tuple[int, ...], rng: np.random.Generator) -> dict:
  """Points `L2.scale` x `Trainer.seed` with random accuracies; {(strength, seed): Written}."""
  written = {}
  for strength in STRENGTHS:
    for seed in seeds:
      point = sweep.Point((("L2.scale", strength), ("Trainer.seed", str(seed))))
      point_dir = os.path.join(sweep_dir, point.name)
      sweep.write_point(point_dir, point, [])
      values = Written(_f32(rng.uniform(0.8, 0.95, len(STEPS))), _f32(rng.uniform(0.9, 1.0, len(STEPS))),
                       *_f32(rng.uniform(0.8, 0.95, 2)))
      evaluation = tf.summary.create_file_writer(os.path.join(point_dir, "eval"))
      with evaluation.as_default():
        for index, step in enumerate(STEPS):
          tf.summary.scalar("eval/accuracy", values.eval_acc[index], step=step)
          tf.summary.scalar("train_eval/accuracy", values.train_eval_acc[index], step=step)
          tf.summary.scalar("gap/accuracy", values.train_eval_acc[index] - values.eval_acc[index], step=step)
        tf.summary.scalar("test/accuracy", values.test_acc, step=STEPS[-1])
        tf.summary.scalar("best/test/accuracy", values.test_acc_at_best, step=values.best_step)
      evaluation.close()
      sweep.mark_done(point_dir, 1.0)
      written[strength, seed] = values
  return written


@dataclasses.dataclass(frozen=True)
class Reported:
  sweep_dir: str
  out_dir: str
  written: dict
  report: report.Report


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory) -> Reported:
  """Three strengths x three seeds, reported in PNG, SVG and PDF at DPI and FONT_SIZE."""
  root = tmp_path_factory.mktemp("report")
  sweep_dir, out_dir = str(root / "l2"), str(root / "out")
  written = write_sweep(sweep_dir, (0, 1, 2), np.random.default_rng(0))
  style = plots.PlotStyle(formats=("png", "svg", "pdf"), dpi=DPI, font_size=FONT_SIZE)
  return Reported(sweep_dir, out_dir, written, report.build([sweep_dir], out_dir, style=style))


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory) -> Reported:
  root = tmp_path_factory.mktemp("report_one_seed")
  sweep_dir, out_dir = str(root / "l2"), str(root / "out")
  written = write_sweep(sweep_dir, (0,), np.random.default_rng(1))
  return Reported(sweep_dir, out_dir, written, report.build([sweep_dir], out_dir))


def _seeds(reported: Reported, strength: str, field: str) -> np.ndarray:
  """The written value of `field` (a `Written` field, named as the report column) per seed at `strength`
  (for the per-step fields: at the last step)."""
  values = [getattr(w, field) for (s, _), w in reported.written.items() if s == strength]
  return np.array([v[-1] if isinstance(v, np.ndarray) else v for v in values])


def test_t_quantile_is_students():
  for dof in [*range(1, 31), 50, 100, 1000]:
    assert intervals.t_quantile(dof) == pytest.approx(stats.t.ppf(0.975, dof), rel=1e-10), dof
  assert intervals.t_quantile(4, level=0.9) == pytest.approx(stats.t.ppf(0.95, 4), rel=1e-10)
  values = [0.91, 0.935, 0.9, 0.95]
  mean, std, halfwidth = intervals.summarize(values)
  assert (mean, std) == pytest.approx((np.mean(values), np.std(values, ddof=1)), rel=1e-12)
  assert halfwidth == pytest.approx(stats.t.ppf(0.975, 3) * std / 2, rel=1e-10)
  assert all(math.isnan(v) for v in intervals.summarize([0.9])[1:])


@pytest.mark.parametrize("column", ["eval_acc", "train_eval_acc", "test_acc", "test_acc_at_best"])
def test_each_point_holds_the_mean_and_t_interval_over_its_seeds(three_seeds, column):
  groups = three_seeds.report.groups
  assert [g.x for g in groups] == [float(s) for s in STRENGTHS] and all(len(g.runs) == 3 for g in groups)
  for strength, group in zip(STRENGTHS, groups):
    values = _seeds(three_seeds, strength, column)
    assert group.mean[column] == pytest.approx(values.mean(), rel=1e-12)
    assert group.std[column] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert group.ci[column] == pytest.approx(stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3),
                                             rel=1e-9)


def test_test_accuracy_at_the_best_validation_step_is_a_column(three_seeds):
  for run in three_seeds.report.runs:
    values = three_seeds.written[run.bindings["L2.scale"], int(run.bindings["Trainer.seed"])]
    assert run.values["test_acc_at_best"] == values.test_acc_at_best
    assert run.values["test_acc"] == values.test_acc  # the last weights': another number
    assert run.values["best_eval_acc"] == values.eval_acc.max()
    assert run.values["train_eval_acc"] == values.train_eval_acc[-1]


def test_summary_md_is_narrow_with_interval_cells(three_seeds):
  with open(three_seeds.report.files["summary.md"]) as file:
    table = file.read()
  lines = table.splitlines()
  assert lines[0] == "| L2.scale | n | " + " | ".join(report.DEFAULT_TABLE) + " |"  # no series column
  group = three_seeds.report.groups[1]
  cells = lines[3].strip("| ").split(" | ")
  assert cells[:2] == ["0.001", "3"]
  assert cells[2:] == [f"{group.mean[c]:.4g} ± {group.ci[c]:.2g}" for c in report.DEFAULT_TABLE]
  assert report.INTERVAL_NOTE in table and "train_acc" not in lines[0]


def test_one_seed_has_no_interval_n_a_not_zero(one_seed):
  table = one_seed.report.markdown
  rows = table.splitlines()[2:5]
  assert all(cell.endswith("± n/a") for row in rows for cell in row.strip("| ").split(" | ")[2:])
  assert "± 0" not in table
  with open(one_seed.report.files["summary.csv"]) as file:
    header, first = file.readline().strip().split(","), file.readline().strip().split(",")
  row = dict(zip(header, first))
  assert float(row["eval_acc_mean"]) == _seeds(one_seed, "0", "eval_acc")[0]
  assert row["eval_acc_std"] == row["eval_acc_ci95"] == ""  # undefined, not 0


def test_plots_are_written_in_every_format_at_the_dpi(three_seeds):
  image = pytest.importorskip("matplotlib.image")
  files = three_seeds.report.files
  for name, panels in (("vs_strength", len(report.DEFAULT_PANELS)), ("curves", len(report.DEFAULT_CURVES))):
    pixels = image.imread(files[f"{name}.png"])
    assert pixels.shape[:2] == (plots.PANEL_INCHES[1] * DPI, plots.PANEL_INCHES[0] * DPI * panels), name
    assert pixels[..., :3].std() > 0.05, name  # not a blank image
    with open(files[f"{name}.pdf"], "rb") as file:
      pdf = file.read()
    assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf, name  # TrueType fonts embedded (editable)


def _svg_texts(path: str) -> dict[str, str]:
  """{text: its style} of every text element of an SVG matplotlib wrote with text kept as text."""
  texts = {}
  for element in ElementTree.parse(path).iter("{http://www.w3.org/2000/svg}text"):
    texts["".join(element.itertext()).strip()] = element.get("style", "")
  return texts


def test_svg_plots_have_axis_labels_titles_legends_at_the_font_size(three_seeds):
  vs_strength = _svg_texts(three_seeds.report.files["vs_strength.svg"])
  for text in ("L2.scale", "eval/accuracy", "train_eval/accuracy", "gap/accuracy",  # x and y labels
               "eval_acc", "train_eval_acc", "gap_acc", "mean, 95% CI", "best eval_acc", "0.001"):
    assert text in vs_strength, text
  assert f"font-size: {FONT_SIZE:g}px" in vs_strength["L2.scale"]
  curves = _svg_texts(three_seeds.report.files["curves.svg"])
  for text in ("step", "eval/accuracy", "train_eval/accuracy", "L2.scale", "0", "0.01", "best eval/accuracy"):
    assert text in curves, text


def _band_at(axis, x: float) -> tuple[float, float]:
  """(lowest, highest) y of the axis' shaded band at `x`."""
  vertices = np.concatenate([path.vertices for collection in axis.collections
                             for path in collection.get_paths()])
  at_x = vertices[np.isclose(vertices[:, 0], x), 1]
  return at_x.min(), at_x.max()


def _stars(axis) -> list[tuple[float, float]]:
  return [(line.get_xdata()[0], line.get_ydata()[0]) for line in axis.lines
          if line.get_marker() == "*" and len(line.get_xdata())]


def test_vs_strength_draws_the_mean_its_band_and_stars_the_best_validation_strength_on_every_panel(
    three_seeds):
  groups = three_seeds.report.groups
  columns = [report.COLUMN_BY_NAME[name] for name in ("eval_acc", "train_eval_acc", "gap_acc")]
  figure = plots.plot_vs_strength(groups, columns, "L2.scale", plots.PlotStyle())
  axis = figure.axes[0]
  mean_line = next(line for line in axis.lines if line.get_marker() == "o")
  assert list(mean_line.get_ydata()) == [g.mean["eval_acc"] for g in groups]
  positions = mean_line.get_xdata()
  assert positions[0] == pytest.approx(float(STRENGTHS[1]) / 10)  # 0 one decade left of 1e-3
  for position, group in zip(positions, groups):
    assert _band_at(axis, position) == pytest.approx(
        (group.mean["eval_acc"] - group.ci["eval_acc"], group.mean["eval_acc"] + group.ci["eval_acc"]))
  # The strength whose mean last validation accuracy over the seeds is highest, from the written values;
  # starred on each panel at that strength, even where it is not the panel's maximum.
  best = int(np.argmax([_seeds(three_seeds, strength, "eval_acc").mean() for strength in STRENGTHS]))
  for panel, column in zip(figure.axes, columns):
    assert _stars(panel) == [(positions[best], pytest.approx(groups[best].mean[column.name]))], column.name
  # The case the star was wrong in: the panel's own extreme (the most negative gap) is elsewhere.
  assert best != int(np.argmin([g.mean["gap_acc"] for g in groups]))


def test_curves_are_one_mean_line_per_point_not_one_per_seed(three_seeds):
  groups = three_seeds.report.groups
  figure = plots.plot_curves(groups, ["eval/train_eval/accuracy", "eval/eval/accuracy"], "L2.scale",
                             plots.PlotStyle())
  train_eval, evaluation = figure.axes
  lines = [line for line in evaluation.lines if line.get_marker() == "o"]
  assert len(lines) == len(STRENGTHS)  # 9 runs, 3 points
  best_steps = []
  for line, strength in zip(lines, STRENGTHS):
    per_seed = np.array([w.eval_acc for (s, _), w in three_seeds.written.items() if s == strength])
    assert list(line.get_xdata()) == list(STEPS)
    np.testing.assert_allclose(line.get_ydata(), per_seed.mean(axis=0), rtol=1e-12)
    best_steps.append(STEPS[int(np.argmax(per_seed.mean(axis=0)))])
  # Each point's best-validation step, starred on both panels (not the train_eval maximum).
  for axis in (train_eval, evaluation):
    curves = [line for line in axis.lines if line.get_marker() == "o"]
    assert [x for x, _ in _stars(axis)] == best_steps
    for (x, y), curve in zip(_stars(axis), curves):
      assert y == curve.get_ydata()[list(curve.get_xdata()).index(x)]


def _group(x: float, value: float):
  """A grid point of one run without event data: only what the strength plot reads."""
  return report.Group("all", x, {}, [], {"eval_acc": value}, {"eval_acc": math.nan}, {"eval_acc": math.nan})


@pytest.mark.parametrize("strengths, labels", [
    ((0.0, 1e-3, 1e-2), ["0", "0.001", "0.01"]),  # a grid: each strength is a tick
    (tuple(np.geomspace(1.5e-3, 0.3, 12)) + (0.0,), ["0", "1e-3", "1e-2", "1e-1", "1e0"]),  # a study
    (tuple(np.geomspace(1e-6, 1e-1, 12)), ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1"]),
    ((1.51193e-3, 1.56767e-3, 2e-3), ["1e-3", "1e-2"]),  # close values: the decades around them
])
def test_strength_ticks_are_readable(strengths, labels):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  groups = [_group(x, 0.9) for x in sorted(strengths)]
  figure = plots.plot_vs_strength(groups, [report.COLUMN_BY_NAME["eval_acc"]], "L2.scale", plots.PlotStyle())
  axis = figure.axes[0]
  renderer = FigureCanvasAgg(figure).get_renderer()
  assert [label.get_text() for label in axis.get_xticklabels()] == labels
  boxes = [label.get_window_extent(renderer) for label in axis.get_xticklabels()]
  assert not any(first.overlaps(second) for first, second in zip(boxes, boxes[1:]))  # nothing overprints
  low, high = axis.get_xlim()
  points = next(line for line in axis.lines if line.get_marker() == "o").get_xdata()
  assert low <= points.min() and points.max() <= high  # every point is on the axis


def test_a_panel_without_data_is_left_out(three_seeds):
  columns = [report.COLUMN_BY_NAME[name] for name in ("eval_acc", "sparsity")]
  figure = plots.plot_vs_strength(three_seeds.report.groups, columns, "L2.scale", plots.PlotStyle())
  assert [axis.get_title() for axis in figure.axes] == ["eval_acc"]
  assert plots.plot_curves(three_seeds.report.groups, ["train/norms/weights_l2"], None,
                           plots.PlotStyle()) is None


@pytest.mark.parametrize("flag, message", [("--formats=png,gif", "--formats=png,gif: choose from"),
                                           ("--dpi=0", "--dpi must be positive"),
                                           ("--font_size=-1", "--font_size must be positive"),
                                           ("--table=eval_acc,train_accuracy", "--table: unknown columns")])
def test_bad_flags_exit_2_naming_the_flag(flag, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    report.parse_args(["/tmp/sweep", "--out_dir=/tmp/out", flag])
  assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_event_reader_reads_what_the_tensorboard_server_shows(tmp_path):
  """A killed run's late steps purged by the resume (Occam's own purge), texts and histograms left out,
  a step written twice, and a record cut short at the end."""
  event_dir = str(tmp_path / "train")
  killed = tf.summary.create_file_writer(event_dir)
  with killed.as_default():
    for step in (1, 2, 3):
      tf.summary.scalar("train/loss", 1.0 / step, step=step)
      tf.summary.histogram("weights/kernel", tf.random.normal([8]), step=step)
    tf.summary.text("config/operative_gin", "x = 1", step=1)
    tf.summary.scalar("train/loss", 0.25, step=3)  # the step written again
  killed.close()
  (name,) = os.listdir(event_dir)  # renamed to sort first, as the killed run's older file does
  os.rename(os.path.join(event_dir, name), os.path.join(event_dir, name.replace(".tfevents.", ".tfevents.0")))
  assert summaries.SummaryWriters(str(tmp_path)).purge_after(2) == [event_dir]  # the resume from step 2
  resumed = tf.summary.create_file_writer(event_dir)
  with resumed.as_default():
    tf.summary.scalar("train/loss", 0.2, step=3)
  resumed.close()
  newest = max(name for name in os.listdir(event_dir) if "~resume" not in name)
  with open(os.path.join(event_dir, newest), "ab") as file:  # a record still being written
    file.write(b"\x40\x00\x00\x00\x00\x00\x00\x00abcd")
  read = event_files.read_scalars(event_dir)
  assert read == server_scalars(event_dir)
  assert read == {"train/loss": [(1, 1.0), (2, 0.5), (3, pytest.approx(0.2))]}
  assert event_files.read_scalars(str(tmp_path / "missing")) == {}


@pytest.mark.multiprocess
def test_the_report_command_never_imports_tensorflow(three_seeds, tmp_path):
  code = ("import sys; from trainer.experiments import report; "
          f"code = report.main([{three_seeds.sweep_dir!r}, '--out_dir={tmp_path}']); "
          "print('exit', code, 'tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.stdout.strip().splitlines()[-1] == "exit 0 False", result.stderr[-3000:]
  assert {"summary.md", "vs_strength.png", "curves.png"} <= set(os.listdir(tmp_path))


def _study(parameters: tuple[str, ...]):
  """A finished in-memory Optuna study of four trials over `parameters` (log-uniform strengths)."""
  optuna = pytest.importorskip("optuna")
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
  study.optimize(lambda trial: sum(-math.log10(trial.suggest_float(name, 1e-5, 1e-1, log=True))
                                   for name in parameters), n_trials=4)
  return study


def test_study_views_name_the_metric_and_skip_a_one_parameter_importance(tmp_path):
  image = pytest.importorskip("matplotlib.image")
  from matplotlib import pyplot
  figures, skipped = plots.study_views(_study(("L2.scale",)), "eval/accuracy")
  try:
    assert sorted(figures) == ["history", "slice"] and list(skipped) == ["importances"]
    assert "one searched parameter (L2.scale)" in skipped["importances"]
    for figure in figures.values():
      labels = [axis.get_ylabel() for axis in figure.axes]
      assert "eval/accuracy" in labels and "Objective Value" not in labels
  finally:
    for figure in figures.values():
      pyplot.close(figure)
  written, _ = plots.write_study_views(_study(("L2.scale", "Dropout.rate")), "eval/loss", str(tmp_path), "s_")
  assert sorted(written) == ["history", "importances", "slice"]
  for path in written.values():
    height, width = image.imread(path).shape[:2]
    assert width >= 800 and height >= 500, (path, width, height)  # Optuna's figure at DEFAULT_DPI, not 72


def test_the_trial_table_has_a_header_naming_the_metric():
  from trainer.experiments import study_storage
  lines = study_storage.summary(_study(("L2.scale",)), "eval/accuracy").splitlines()
  assert lines[0].split() == ["trial", "state", "eval/accuracy", "step", "params"]
  assert [line.split()[:2] for line in lines[1:5]] == [[str(n), "COMPLETE"] for n in range(4)]
  assert lines[1].index("COMPLETE") == lines[0].index("state")  # the columns line up with the header
