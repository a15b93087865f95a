"""The experiment scripts end to end: a two-point sweep, its resume, its report and its plots.

The sweep runs as real subprocesses (`scripts/sweep.py` launching `python -m trainer.main`); the
report's numbers are checked against the event files read back independently with
`tests.helpers.read_scalars`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, read_scalars

SCRIPTS = os.path.join(REPO, "scripts")
sys.path.insert(0, SCRIPTS)
import report  # noqa: E402  pylint: disable=wrong-import-position
import sweep  # noqa: E402  pylint: disable=wrong-import-position

TINY = ["Trainer.train_steps=20", "Trainer.steps_per_loop=10", "Trainer.eval_every=10",
        "Trainer.checkpoint_every=10", "MLP.hidden_sizes=(16,)"]
GRID = ["--grid", "L2.scale=[0, 1e-2]"]


def run_script(name: str, args: list[str]) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *args], cwd=REPO, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """Runs the two-point sweep twice (the second must skip both) and reports on it."""
  root = tmp_path_factory.mktemp("sweep")
  sweep_dir, out_dir = str(root / "sweep"), str(root / "report")
  args = (["--gin_file=gin_configs/quickstart.gin", f"--sweep_dir={sweep_dir}", "--parallel=2"]
          + [f"--gin_bindings={b}" for b in TINY] + GRID)
  first = run_script("sweep.py", args)
  assert first.returncode == 0, first.stdout[-4000:]
  second = run_script("sweep.py", args)
  assert second.returncode == 0, second.stdout[-4000:]
  made = run_script("report.py", [sweep_dir, f"--out_dir={out_dir}"])
  assert made.returncode == 0, made.stdout[-4000:]
  return sweep_dir, out_dir, first.stdout, second.stdout


def test_each_point_trains_in_its_own_named_dir(swept):
  sweep_dir, _, first, _ = swept
  for name in ("L2.scale=0", "L2.scale=1e-2"):
    point_dir = os.path.join(sweep_dir, name)
    assert os.path.exists(os.path.join(point_dir, sweep.DONE_FILE)), first[-3000:]
    steps = [step for step, _ in read_scalars(os.path.join(point_dir, "eval"))["eval/accuracy"]]
    assert steps == [10, 20]
  assert "2/2 ok" in first


def test_rerun_skips_finished_points(swept):
  sweep_dir, _, _, second = swept
  assert "2 finished (skipped), 0 to run" in second
  with open(os.path.join(sweep_dir, sweep.SWEEP_FILE)) as file:
    invocations = json.load(file)["invocations"]
  assert [(i["ran"], i["skipped"]) for i in invocations] == [(2, 0), (0, 2)]


def test_report_values_equal_the_event_files(swept):
  sweep_dir, out_dir, _, _ = swept
  with open(os.path.join(out_dir, "runs.csv")) as file:
    rows = {row["run"]: row for row in csv.DictReader(file)}
  assert set(rows) == {"L2.scale=0", "L2.scale=1e-2"}
  for name, row in rows.items():
    evaluation = read_scalars(os.path.join(sweep_dir, name, "eval"))
    train = read_scalars(os.path.join(sweep_dir, name, "train"))
    assert float(row["eval_acc"]) == evaluation["eval/accuracy"][-1][1]
    assert float(row["best_eval_acc"]) == max(v for _, v in evaluation["eval/accuracy"])
    assert float(row["best_eval_loss"]) == min(v for _, v in evaluation["eval/loss"])
    assert float(row["test_acc"]) == evaluation["test/accuracy"][-1][1]
    assert float(row["train_acc"]) == train["train/accuracy"][-1][1]
  assert float(rows["L2.scale=0"]["penalty"]) == 0.0 < float(rows["L2.scale=1e-2"]["penalty"])
  with open(os.path.join(out_dir, "summary.md")) as file:
    table = file.read()
  assert "| series | L2.scale | n | eval_acc |" in table
  assert f"{float(rows['L2.scale=1e-2']['eval_acc']):.4g} ± 0" in table


def test_plots_decode_to_images_of_the_expected_size(swept):
  image = pytest.importorskip("matplotlib.image")
  _, out_dir, _, _ = swept
  for name, panels in (("vs_strength.png", 3), ("curves.png", 2)):
    pixels = image.imread(os.path.join(out_dir, name))
    height, width = pixels.shape[:2]
    assert (width, height) == (report.PANEL_INCHES[0] * report.DPI * panels,
                               report.PANEL_INCHES[1] * report.DPI), name


def test_missing_tags_are_missing_columns(tmp_path):
  runs = [report.Run("s", "a", {"L2.scale": "0"}, {}, {"eval_acc": 0.5}),
          report.Run("s", "b", {"L2.scale": "1"}, {}, {"eval_acc": 0.7})]
  groups = report.group_runs(runs, {"s": "L2.scale"}, "Trainer.seed")
  assert report.present_columns(runs) == ["eval_acc"]
  assert report.plot_vs_strength(str(tmp_path / "p.png"), groups, ["eval_acc", "sparsity"],
                                 "L2.scale") == ["eval_acc"]


def test_unknown_grid_key_fails_before_anything_runs(tmp_path):
  result = run_script("sweep.py", ["--gin_file=gin_configs/quickstart.gin", f"--sweep_dir={tmp_path / 's'}",
                                   "--grid", "L2.scal=[0, 1e-3]"])
  assert result.returncode == sweep.EXIT_BAD_INPUT
  assert "--grid L2.scal" in result.stdout and "doesn't have a parameter named 'scal'" in result.stdout
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


def test_changing_the_fixed_bindings_of_an_existing_sweep_is_refused(swept, capsys):
  sweep_dir = swept[0]
  changed = TINY[:-1] + ["MLP.hidden_sizes=(32,)"]
  args = ([f"--gin_file={os.path.join(REPO, 'gin_configs', 'quickstart.gin')}", f"--sweep_dir={sweep_dir}"]
          + [f"--gin_bindings={b}" for b in changed] + GRID)
  assert sweep.main(args) == sweep.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert f"--sweep_dir={sweep_dir} was started with gin_bindings" in err and "MLP.hidden_sizes=(32,)" in err
