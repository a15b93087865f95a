"""`trainer.experiments.results` on real runs: every value a run wrote, once each, and a sweep's table.

The frames are checked against the event files read back independently with TensorBoard's reader
(`tests.helpers.read_scalars`). The sweep is the session's shared one (tests/sweep_fixtures.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import tensorflow as tf

from tests.helpers import FAST, MAIN_LANE_ONLY, QUICKSTART, read_scalars, run_main
from tests.sweep_fixtures import POINTS, TINY
from trainer.experiments import report, results, sweep

pytestmark = MAIN_LANE_ONLY


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> str:
  """A quickstart run trained to step 100, resumed to 200, then run once more after it finished.

  The last invocation restores step 200 and evaluates again, so the event files hold the final
  evaluation's step twice, as after any rerun of a finished run.
  """
  model_dir = str(tmp_path_factory.mktemp("results") / "run")
  for steps in (100, 200, 200):  # the CLI's code path, in this process (the results read its files)
    bindings = [*FAST, f"Trainer.train_steps={steps}"]
    assert run_main([f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}"]
                    + [f"--gin_bindings={b}" for b in bindings]) == 0
  return model_dir


@pytest.mark.slow  # `resumed_run`: three runs
def test_run_scalars_are_the_written_values_once_per_step(resumed_run):
  written = [(directory, tag, step, value) for directory in ("train", "eval")
             for tag, series in read_scalars(os.path.join(resumed_run, directory)).items()
             for step, value in series]
  last = {}
  for directory, tag, step, value in written:
    last[directory, tag, step] = value
  assert len(last) < len(written)  # The rerun wrote the final evaluation's step again.
  frame = results.run_scalars(resumed_run)
  assert list(frame.columns) == ["directory", "tag", "step", "value"]
  expected = sorted((*key, value) for key, value in last.items())
  assert list(frame.itertuples(index=False, name=None)) == expected
  assert frame[frame.tag == "eval/accuracy"].step.tolist() == [100, 200]
  assert frame[frame.tag == "train/loss"].step.tolist() == [50, 100, 150, 200]


def test_a_step_written_twice_keeps_the_value_written_last(tmp_path):
  writer = tf.summary.create_file_writer(str(tmp_path / "eval"))
  with writer.as_default():
    for step, value in ((1, 0.5), (2, 0.25), (2, 0.75)):
      tf.summary.scalar("eval/loss", value, step=step)
  writer.close()
  frame = results.run_scalars(str(tmp_path))
  assert list(frame.itertuples(index=False, name=None)) == [("eval", "eval/loss", 1, 0.5),
                                                            ("eval", "eval/loss", 2, 0.75)]
  assert results.run_scalars(str(tmp_path / "no_run")).empty


@pytest.mark.slow  # the session's `swept` fixture
@pytest.mark.multiprocess
def test_sweep_scalars_has_one_row_per_finished_point(swept, tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  shutil.copytree(swept.sweep_dir, sweep_dir)
  unfinished = os.path.join(sweep_dir, "L2.scale=1")  # Started, never finished: not in the table.
  os.makedirs(unfinished)
  with open(os.path.join(unfinished, sweep.POINT_FILE), "w") as file:
    json.dump({"bindings": {"L2.scale": "1"}}, file)
  frame = results.sweep_scalars(sweep_dir)
  fixed = dict(binding.split("=", 1) for binding in TINY)
  assert list(frame.columns) == ["point", *fixed, "L2.scale", *report.COLUMN_BY_NAME]
  assert frame.point.tolist() == list(POINTS)
  assert frame["L2.scale"].tolist() == ["0", "1e-2"]
  assert frame["MLP.hidden_sizes"].tolist() == ["(16,)", "(16,)"]
  for record in frame.to_dict("records"):
    evaluation = read_scalars(os.path.join(sweep_dir, record["point"], "eval"))
    assert record["eval_acc"] == evaluation["eval/accuracy"][-1][1]
    assert record["best_eval_acc"] == max(value for _, value in evaluation["eval/accuracy"])
    assert record["test_acc"] == evaluation["test/accuracy"][-1][1]
    assert math.isnan(record["hessian_top"])  # The quickstart does not probe sharpness.
