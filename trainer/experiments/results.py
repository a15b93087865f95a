"""Runs and sweeps as pandas DataFrames, for notebooks.

    from trainer.experiments import results
    scalars = results.run_scalars("/tmp/sweeps/l2/L2.scale=1e-3,Trainer.seed=0")
    scalars[scalars.tag == "eval/accuracy"].plot(x="step", y="value")
    table = results.sweep_scalars("/tmp/sweeps/l2")
    table.groupby("L2.scale")[["eval_acc", "best_eval_acc"]].agg(["mean", "std"])

Both read the event files through `occam-report`'s loader (`report.read_run`, `report.load_sweep`),
so a notebook sees the numbers the report tables show, without importing TensorFlow.
"""

from __future__ import annotations

import math

import pandas as pd

from trainer.experiments import report, sweep

SCALAR_KEY = ["directory", "tag", "step"]  # What identifies one value of `run_scalars`.


def run_scalars(model_dir: str) -> pd.DataFrame:
  """Every float scalar of the run in `model_dir` (finished or still running), one row per value.

  Columns `directory` ('train' or 'eval'), `tag`, `step` and `value`, sorted by the first three.
  A step written twice (a resumed or rerun run logs it again) keeps the value written last, as the
  report's final values do, so each (directory, tag, step) is one row. No event files: no rows.
  """
  rows = [(*name.split("/", 1), step, value) for name, series in report.read_run(model_dir).items()
          for step, value in series]
  frame = pd.DataFrame(rows, columns=[*SCALAR_KEY, "value"]).astype({"step": "int64", "value": "float64"})
  return frame.drop_duplicates(SCALAR_KEY, keep="last").sort_values(SCALAR_KEY, ignore_index=True)


def sweep_scalars(sweep_dir: str) -> pd.DataFrame:
  """One row per finished point of the sweep in `sweep_dir` (see `sweep.is_done`), in name order.

  Columns: `point` (the point's directory name); one per binding key, the sweep's fixed
  `--gin_bindings` then its grid keys, holding the gin text as typed (a grid value wins over a fixed
  one); and one per report column (`report.COLUMNS`: final and best values), NaN where the run did
  not write the tag.
  """
  fixed = _fixed_bindings(sweep.read_record(sweep_dir).get("gin_bindings", []))
  runs = report.load_sweep(sweep_dir)
  keys = list(dict.fromkeys([*fixed, *(key for run in runs for key in run.bindings)]))
  values = [column.name for column in report.COLUMNS]
  rows = [{"point": run.name, **fixed, **run.bindings,
           **{name: run.values.get(name, math.nan) for name in values}} for run in runs]
  return pd.DataFrame(rows, columns=["point", *keys, *values])


def _fixed_bindings(bindings: list[str]) -> dict[str, str]:
  """{key: value text} of `KEY=VALUE` bindings (the text after the first '='); other entries are skipped."""
  pairs = (binding.split("=", 1) for binding in bindings if "=" in binding)
  return {key.strip(): value.strip() for key, value in pairs}
