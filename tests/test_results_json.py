"""`model_dir/results.json` and the final console block, on real short runs of the CLI and the API."""

from __future__ import annotations

import json
import os

import pytest

from tests import helpers

KEYS = {"schema", "version", "model_dir", "restored_from", "step", "train_steps", "wall_time_sec",
        "generalization_gap", "early_stopping", "metrics"}


def _results(model_dir: str) -> dict:
  with open(os.path.join(model_dir, "results.json")) as file:
    return json.load(file)


@pytest.mark.slow  # the session's `cli_runs` (tests/cli_fixtures.py): two CLI runs
@pytest.mark.multiprocess
def test_results_json_schema_and_final_block_of_a_cli_run(cli_runs):
  """The first process of `cli_runs` (200 FAST steps, early stopping bound), read from the copy of its
  directory made before the second process resumed it."""
  model_dir, first_dir = cli_runs.model_dir, cli_runs.first_dir
  results = _results(first_dir)
  assert set(results) == KEYS
  assert results["schema"] == 1 and isinstance(results["version"], str)
  assert results["model_dir"] == model_dir and results["restored_from"] is None
  assert results["step"] == results["train_steps"] == 200
  assert 0 < results["wall_time_sec"] < 600
  metrics = results["metrics"]
  # The same numbers as the event files: the final evaluation and the last validation evaluation.
  written = helpers.read_scalars(os.path.join(first_dir, "eval"))
  for tag in ("test/accuracy", "test/loss", "eval/accuracy", "gap/loss", "gap/accuracy"):
    assert metrics[tag] == pytest.approx(written[tag][-1][1], rel=1e-6), tag
  assert results["generalization_gap"] == {"loss": metrics["gap/loss"], "accuracy": metrics["gap/accuracy"]}
  best_step, best_value = max(written["eval/accuracy"], key=lambda point: (point[1], -point[0]))
  best_test = {name: written[f"best/test/{name}"] for name in ("accuracy", "loss")}  # at the best step
  assert results["early_stopping"] == {
      "metric": "eval/accuracy", "step": best_step, "value": pytest.approx(best_value, rel=1e-6),
      "stopped_early": False,
      "test": {name: pytest.approx(points[0][1], rel=1e-6) for name, points in best_test.items()}}
  assert all(points == [(best_step, points[0][1])] for points in best_test.values())
  final = [line.split("] ", 1)[1] for line in cli_runs.first.splitlines() if "] final | " in line]
  assert len(final) == 3, final
  assert f"test/accuracy: {metrics['test/accuracy']:.4g}" in final[0]
  assert "generalization gap: accuracy" in final[1] and f"best eval/accuracy: {best_value:.4g} at step " \
      f"{best_step}" in final[1] and "wall time: " in final[1]
  assert final[2] == f"final | results in {os.path.join(model_dir, 'results.json')}"


def test_a_resumed_run_records_where_it_resumed_from(tmp_path):
  model_dir = str(tmp_path)
  helpers.train_in_process(model_dir, helpers.FAST)
  assert _results(model_dir)["early_stopping"] is None
  helpers.train_in_process(model_dir, [*helpers.FAST, "Trainer.train_steps=250"])
  results = _results(model_dir)
  assert results["restored_from"] == os.path.join(model_dir, "checkpoints", "ckpt-200")
  assert results["step"] == 250 and results["metrics"]["test/accuracy"] > 0.5


def test_rerunning_a_finished_run_leaves_its_record_whole(tmp_path):
  """A rerun trains nothing: results.json keeps every metric of the run and its wall time, byte for byte,
  and the rerun returns the recorded metrics (train/*, penalty/*, norms/* included)."""
  import trainer

  model_dir = str(tmp_path)
  first = trainer.train([helpers.QUICKSTART], helpers.FAST, model_dir=model_dir, verbose=False)
  with open(os.path.join(model_dir, "results.json"), "rb") as file:
    recorded = file.read()
  assert {"train/loss", "penalty/total", "norms/distance_from_init"} <= set(json.loads(recorded)["metrics"])
  again = trainer.train([helpers.QUICKSTART], helpers.FAST, model_dir=model_dir, verbose=False)
  with open(os.path.join(model_dir, "results.json"), "rb") as file:
    assert file.read() == recorded
  assert again.step == first.step == 200 and again.restored_from.endswith("ckpt-200")
  assert again.metrics == pytest.approx(first.metrics, rel=1e-6, nan_ok=True)
