"""The experiment commands end to end: a two-point sweep, its resume, its report and its plots.

The sweep runs as real subprocesses (`python -m trainer.experiments.sweep`, i.e. `occam-sweep`,
launching `python -m trainer.main`; see tests/sweep_fixtures.py); the report's numbers are checked
against the event files read back independently with `tests.helpers.read_scalars`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re

import numpy as np
import pytest

from tests.helpers import MAIN_LANE_ONLY, REPO, checkpoint_values, read_scalars, server_scalars
from tests.sweep_fixtures import GRID, POINTS, TINY
from trainer.experiments import plots, report, sweep
from trainer.metrics import tags

pytestmark = MAIN_LANE_ONLY

# The column names docs/EXPERIMENTS.md and scripts/make_experiments_doc.py use.
DOCUMENTED_COLUMNS = ("eval_acc", "best_eval_acc", "eval_loss", "best_eval_loss", "test_acc", "train_acc",
                      "train_eval_acc", "gap_acc", "gap_loss", "weights_l2", "sparsity", "near_zero",
                      "hessian_top", "sam", "sam_magnitude_aware", "model_losses", "penalty")


@pytest.mark.slow  # the session's `swept` fixture: two sweep invocations and a report, ~40 s
@pytest.mark.multiprocess
def test_each_point_trains_in_its_own_named_dir(swept):
  for name in POINTS:
    point_dir = os.path.join(swept.sweep_dir, name)
    assert os.path.exists(os.path.join(point_dir, sweep.DONE_FILE)), swept.first[-3000:]
    steps = [step for step, _ in read_scalars(os.path.join(point_dir, "eval"))["eval/accuracy"]]
    assert steps == [10, 20]
  assert "2/2 ok" in swept.first


@pytest.mark.slow
@pytest.mark.multiprocess
def test_workers_keep_tensorflow_start_up_lines_off_the_console(swept):
  """Each of the two workers imports TensorFlow: neither prints its start-up block or its CUDA probe's
  `failed call to cuInit` error line (the command line's quiet console)."""
  noise = ("absl::InitializeLog", "cuInit", "cudart_stub", "cpu_feature_guard", "oneDNN")
  assert not [word for word in noise if word in swept.first], swept.first[-3000:]
  assert "2/2 ok" in swept.first


@pytest.mark.slow
@pytest.mark.multiprocess
def test_rerun_skips_finished_points(swept):
  assert "2 finished (skipped), 0 to run" in swept.second
  invocations = sweep.read_record(swept.sweep_dir)["invocations"]
  assert [(i["ran"], i["skipped"]) for i in invocations] == [(2, 0), (0, 2)]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_report_values_equal_the_event_files(swept):
  sweep_dir, out_dir = swept.sweep_dir, swept.out_dir
  with open(os.path.join(out_dir, "runs.csv")) as file:
    rows = {row["run"]: row for row in csv.DictReader(file)}
  assert set(rows) == set(POINTS)
  for name, row in rows.items():
    evaluation = read_scalars(os.path.join(sweep_dir, name, "eval"))
    train = read_scalars(os.path.join(sweep_dir, name, "train"))
    assert float(row["eval_acc"]) == evaluation["eval/accuracy"][-1][1]
    assert float(row["best_eval_acc"]) == max(v for _, v in evaluation["eval/accuracy"])
    assert float(row["best_eval_loss"]) == min(v for _, v in evaluation["eval/loss"])
    assert float(row["test_acc"]) == evaluation["test/accuracy"][-1][1]
    assert float(row["train_acc"]) == train["train/accuracy"][-1][1]
    scalars = report.read_run(os.path.join(sweep_dir, name))  # without TensorFlow, as the server reads
    assert scalars == {f"{d}/{tag}": series for d in ("train", "eval")
                       for tag, series in server_scalars(os.path.join(sweep_dir, name, d)).items()}
  assert float(rows["L2.scale=0"]["penalty"]) == 0.0 < float(rows["L2.scale=1e-2"]["penalty"])
  with open(os.path.join(out_dir, "summary.md")) as file:
    table = file.read()
  header = table.splitlines()[0].strip("| ").split(" | ")
  assert header == ["L2.scale", "n", *(c for c in report.DEFAULT_TABLE if c != "test_acc_at_best")]
  assert f"| 0.01 | 1 | {float(rows['L2.scale=1e-2']['test_acc']):.4g} ± n/a |" in table  # one seed


@pytest.mark.slow
@pytest.mark.multiprocess
def test_plots_decode_to_images_of_the_expected_size(swept):
  image = pytest.importorskip("matplotlib.image")
  for name, panels in (("vs_strength.png", 3), ("curves.png", 2)):
    pixels = image.imread(os.path.join(swept.out_dir, name))
    height, width = pixels.shape[:2]
    assert (width, height) == (plots.PANEL_INCHES[0] * plots.DEFAULT_DPI * panels,
                               plots.PANEL_INCHES[1] * plots.DEFAULT_DPI), name


def test_missing_tags_are_missing_columns():
  runs = [report.Run("s", "a", {"L2.scale": "0"}, {}, {"eval_acc": 0.5}),
          report.Run("s", "b", {"L2.scale": "1"}, {}, {"eval_acc": 0.7})]
  assert report.present_columns(runs) == ["eval_acc"]
  groups = report.group_runs(runs, {"s": "L2.scale"}, "Trainer.seed")
  assert [(g.x, g.mean) for g in groups] == [(0.0, {"eval_acc": 0.5}), (1.0, {"eval_acc": 0.7})]
  assert all(math.isnan(g.std["eval_acc"]) and math.isnan(g.ci["eval_acc"]) for g in groups)  # one seed


def test_the_experiments_doc_and_the_report_show_a_group_in_one_cell_format(monkeypatch):
  """docs/EXPERIMENTS.md's verdicts quote the report's table cell: mean ± the 95% interval's half-width."""
  from scipy import stats
  monkeypatch.syspath_prepend(os.path.join(REPO, "scripts"))
  import make_experiments_doc
  accuracies = [0.71, 0.74, 0.78]
  runs = [report.Run("s", f"p{seed}", {"L2.scale": "0", "Trainer.seed": str(seed)}, {}, {"eval_acc": value})
          for seed, value in enumerate(accuracies)]
  group, = report.group_runs(runs, {"s": "L2.scale"}, "Trainer.seed")
  half_width = stats.t.ppf(0.975, 2) * np.std(accuracies, ddof=1) / math.sqrt(3)
  expected = f"{np.mean(accuracies):.4g} ± {half_width:.2g}"
  assert make_experiments_doc._cell(group, "eval_acc") == expected
  assert report.markdown_table([group], ["eval_acc"], "L2.scale").splitlines()[2].endswith(f"| {expected} |")
  assert make_experiments_doc._cell(group, "sparsity") == "n/a"


def test_columns_derive_from_the_tag_registry():
  registry = {"acc": tags.Tag("eval/accuracy", tags.EVAL, "", higher_is_better=True, evaluated=True),
              "loss": tags.Tag("eval/loss", tags.EVAL, "", higher_is_better=False, evaluated=True),
              "norm": tags.Tag("norms/weights_l2", tags.TRAIN, "", evaluated=True),
              "test_acc": tags.Tag("test/accuracy", tags.EVAL, "", higher_is_better=True)}
  assert [(c.name, c.event_dir, c.tag, c.reduce) for c in report.derive_columns(registry)] == [
      ("acc", "eval", "eval/accuracy", report.final),
      ("best_acc", "eval", "eval/accuracy", report.best_max),
      ("loss", "eval", "eval/loss", report.final),
      ("best_loss", "eval", "eval/loss", report.best_min),
      ("norm", "train", "norms/weights_l2", report.final),
      ("test_acc", "eval", "test/accuracy", report.final)]
  assert set(DOCUMENTED_COLUMNS) <= set(report.COLUMN_BY_NAME)
  assert report.COLUMN_BY_NAME["best_eval_acc"].reduce is report.best_max
  assert report.COLUMN_BY_NAME["best_eval_loss"].reduce is report.best_min


def test_unknown_grid_key_fails_before_anything_runs(tmp_path, capsys):
  quickstart = os.path.join(REPO, "gin_configs", "quickstart.gin")
  code = sweep.main([f"--gin_file={quickstart}", f"--sweep_dir={tmp_path / 's'}",
                     "--grid", "L2.scal=[0, 1e-3]"])
  assert code == sweep.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert "--grid L2.scal" in err and "doesn't have a parameter named 'scal'" in err
  assert not os.path.exists(tmp_path / "s")


@pytest.mark.parametrize("entry, message", [("L2.scale=0", "expected KEY=[VALUE, ...]"),
                                            ("L2.scale=[]", "empty"),
                                            ("L2.scale=[1, 1]", "repeated")])
def test_malformed_grid_entries_are_named(entry, message):
  with pytest.raises(sweep.GridError, match=re.escape(message)):
    sweep.parse_grid([entry])


def test_grid_values_keep_gin_structure_and_names_are_stable():
  key, values = sweep.parse_grid_entry("Trainer.regularizers=[[@L1()], [@ProximalL1()], []]")
  assert (key, values) == ("Trainer.regularizers", ["[@L1()]", "[@ProximalL1()]", "[]"])
  points = sweep.expand([(key, values), ("MLP.hidden_sizes", ["(64, 64)"])])
  assert [p.name for p in points] == ["Trainer.regularizers=L1,MLP.hidden_sizes=64,64",
                                      "Trainer.regularizers=ProximalL1,MLP.hidden_sizes=64,64",
                                      "Trainer.regularizers=,MLP.hidden_sizes=64,64"]
  assert points[0].gin_bindings() == ["Trainer.regularizers=[@L1()]", "MLP.hidden_sizes=(64, 64)"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_changing_the_fixed_bindings_of_an_existing_sweep_is_refused(swept, capsys):
  sweep_dir = swept.sweep_dir
  changed = TINY[:-1] + ["MLP.hidden_sizes=(32,)"]
  args = ([f"--gin_file={os.path.join(REPO, 'gin_configs', 'quickstart.gin')}", f"--sweep_dir={sweep_dir}"]
          + [f"--gin_bindings={b}" for b in changed] + GRID)
  assert sweep.main(args) == sweep.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert f"--sweep_dir={sweep_dir} was started with gin_bindings" in err and "MLP.hidden_sizes=(32,)" in err


@pytest.mark.slow
def test_a_point_is_bit_identical_alone_or_after_another_in_the_same_worker(tmp_path, capsys):
  """One worker (this process) trains L2.scale=1e-1 then 1e-3; 1e-3 alone in another sweep matches it
  exactly: every evaluation, the final metrics and the checkpoint. A bad point fails alone."""
  quickstart = os.path.join(REPO, "gin_configs", "quickstart.gin")
  common = [f"--gin_file={quickstart}"] + [f"--gin_bindings={b}" for b in TINY]
  after, alone = str(tmp_path / "after"), str(tmp_path / "alone")
  assert sweep.main(common + [f"--sweep_dir={after}", "--grid", "L2.scale=[1e-1, 1e-3]",
                              "--grid", "MLP.hidden_sizes=[(16,), (-1,)]"]) == sweep.EXIT_FAILED
  err = capsys.readouterr().err
  bad = os.path.join(after, "L2.scale=1e-1,MLP.hidden_sizes=-1,")
  assert "FAILED L2.scale=1e-1,MLP.hidden_sizes=-1, | InvalidRunError" in err
  assert os.path.join(bad, sweep.LOG_FILE) in err and not sweep.is_done(bad)
  with open(os.path.join(bad, sweep.LOG_FILE)) as file:
    assert "Received an invalid value for `units`" in file.read()
  assert sweep.main(common + [f"--sweep_dir={alone}", "--grid", "L2.scale=[1e-3]",
                              "--grid", "MLP.hidden_sizes=[(16,)]"]) == 0
  runs = {}
  for sweep_dir in (after, alone):
    runs[sweep_dir] = point_dir = os.path.join(sweep_dir, "L2.scale=1e-3,MLP.hidden_sizes=16,")
    with open(os.path.join(point_dir, sweep.LOG_FILE)) as file:
      assert "final | step 20" in file.read()  # the run's absl log, written in process
  scalars, final = [], []
  for point_dir in runs.values():  # all but the timings
    scalars.append({k: v for k, v in report.read_run(point_dir).items() if "perf/" not in k})
    with open(os.path.join(point_dir, "results.json")) as file:
      final.append({k: v for k, v in json.load(file)["metrics"].items() if not k.startswith("perf/")})
  assert "eval/eval/accuracy" in scalars[0] and scalars[0] == scalars[1]
  assert "test/accuracy" in final[0] and final[0] == final[1]
  expected, actual = checkpoint_values(runs[alone]), checkpoint_values(runs[after])
  assert expected.keys() == actual.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(actual[key], value, err_msg=key)


def test_weight_averaging_verdict_pairs_each_average_with_its_own_series_raw_weights(monkeypatch):
  """A series without raw-weight evaluations gets no paired difference (not the previous series' raw)."""
  monkeypatch.syspath_prepend(os.path.join(REPO, "scripts"))
  import make_experiments_doc
  tags_ = ("eval/accuracy", "test/accuracy", "train_eval/accuracy", "gap/accuracy")

  def run(series, seed, directories):
    scalars = {f"{directory}/{tag}": [(10, 0.5 + 0.01 * seed)] for directory in directories for tag in tags_}
    return report.Run(series, f"p{seed}", {"Trainer.seed": str(seed)}, scalars, {})

  groups = [report.Group(series, 0.0, {}, [run(series, seed, directories) for seed in range(2)], {}, {}, {})
            for series, directories in (("with_raw", ("eval", "eval_ema")), ("no_raw", ("eval_ema",)))]
  verdict = make_experiments_doc.verdict_weight_averaging(report.Report([], groups, None, "", {}))
  lines = [line for line in verdict.splitlines() if line.startswith("- ")]
  assert [line.split(",")[0] for line in lines] == ["- with_raw"]
  assert "| no_raw | ema | 2 |" in verdict  # its row is still in the table
