r"""Tables and plots of one or more sweeps (`occam-sweep`), read from their event files.

    occam-report /tmp/sweeps/l2 [/tmp/sweeps/adamw ...] --out_dir=/tmp/sweeps/report
    occam-report /tmp/sweeps/l2 --out_dir=/tmp/paper --formats=pdf,svg --font_size=9   # for a paper

Writes to `--out_dir`:
  runs.csv            one row per run: its bindings and every column below (full float precision)
  summary.csv         one row per grid point without the seed: n, and per column the mean, the sample
                      std and the half-width of the 95% confidence interval of the mean (empty for n = 1)
  summary.md          the `--table` columns as a Markdown table, `mean ± half-width` (`n/a`: one seed)
  vs_strength.FORMAT  each `--panels` column against the strength (log x axis; 0 drawn at the left):
                      the mean over seeds, a band for its 95% interval, the best-validation strength
                      starred on every panel (`plots.VALIDATION`)
  curves.FORMAT       training curves (`--curves` tags against step): per grid point the mean over
                      seeds with its 95% band, its best-validation step starred on every panel
  NAME_history.png    for a study directory (`occam-tune`): its optimization history, parameter
  NAME_importances.png  importances (2+ parameters) and slice plot, drawn by Optuna (2+ complete trials)
  NAME_slice.png

The interval is Student t's (`trainer.experiments.intervals`): mean ± t(n-1) * std / sqrt(n).

The columns derive from the tag registry (`trainer.metrics.tags`): each tag with a column name gives
that column (its value at the run's last step) and, if every evaluation writes it and it has a better
direction, `best_<column>` (its best value over the evaluations). `test_acc_at_best` is the test
accuracy of the best-validation weights (runs with early stopping). Runs are read without TensorFlow
(`trainer.experiments.event_files`). The figures are drawn by `trainer.experiments.plots`, which
needs matplotlib (the `experiments` extra); loading and the tables do not.

The strength is `--x` (default, per sweep: its first varying numeric grid key other than the seed).
Other varying keys, and each sweep directory when several are given, make separate series. A tag
that no run wrote is a missing column, not an error, so the report works for any trainer version.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from typing import Sequence

from trainer.experiments import event_files, intervals, plots, study_storage, sweep
from trainer.experiments.report_data import Column, Group, Run, Scalars, best_max, best_min, cell, final
from trainer.metrics import tags

EVENT_DIRS = (tags.TRAIN, tags.EVAL)  # The event directories below a run's model_dir that hold scalars.


def derive_columns(registry: dict[str, tags.Tag]) -> tuple[Column, ...]:
  """The table columns of `registry` ({column name: Tag}, see `tags.columns()`), in its order.

  Each tag gives its final value under its column name and, when every evaluation writes it and it
  has a better direction, its best value over the run as `best_<name>` (right after it).
  """
  columns = []
  for name, tag in registry.items():
    columns.append(Column(name, tag.directory, tag.pattern, final, tag.higher_is_better))
    if tag.evaluated and tag.higher_is_better is not None:
      columns.append(Column(f"best_{name}", tag.directory, tag.pattern,
                            best_max if tag.higher_is_better else best_min, tag.higher_is_better))
  return tuple(columns)


COLUMNS = derive_columns(tags.columns())
COLUMN_BY_NAME = {column.name: column for column in COLUMNS}
# Inference-mode training accuracy (`train_eval`), not the training-mode running average.
DEFAULT_PANELS = ("eval_acc", "train_eval_acc", "gap_acc")
DEFAULT_CURVES = ("eval/train_eval/accuracy", "eval/eval/accuracy")
DEFAULT_TABLE = ("test_acc", "test_acc_at_best", "best_eval_acc", "train_eval_acc", "gap_acc")
INTERVAL_NOTE = ("± is the half-width of the 95% confidence interval of the mean over seeds (Student t, "
                 "n - 1 degrees of freedom); n/a: one seed.")


def read_run(model_dir: str) -> Scalars:
  """Every float scalar of the run in `model_dir` as {'dir/tag': [(step, value), ...]}, in the order written.

  The one reader of a run's scalars, for the report and for `trainer.experiments.results`; it needs
  no TensorFlow. A resumed run may hold a step twice; the later value is the one that counts.
  """
  # Each weight average's own run, `eval_<average>` (trainer/regularization/averaging.py).
  averaged = sorted(name for name in (os.listdir(model_dir) if os.path.isdir(model_dir) else ())
                    if name.startswith(tags.averaged_directory("")))
  return {f"{directory}/{tag}": series for directory in EVENT_DIRS + tuple(averaged)
          for tag, series in event_files.read_scalars(os.path.join(model_dir, directory)).items()}


def load_sweep(sweep_dir: str) -> list[Run]:
  """The finished runs of a sweep (points with `done.json`), in directory-name order."""
  runs = []
  for name in sorted(os.listdir(sweep_dir)):
    point_dir = os.path.join(sweep_dir, name)
    if not sweep.is_done(point_dir):
      continue
    with open(os.path.join(point_dir, sweep.POINT_FILE)) as file:
      bindings = json.load(file)["bindings"]
    scalars = read_run(point_dir)
    values = {c.name: c.reduce(scalars[f"{c.event_dir}/{c.tag}"]) for c in COLUMNS
              if scalars.get(f"{c.event_dir}/{c.tag}")}
    runs.append(Run(os.path.basename(os.path.normpath(sweep_dir)), name, bindings, scalars, values))
  return runs


def varying_keys(runs: Sequence[Run]) -> list[str]:
  """Binding keys whose value differs between runs, in first-seen order."""
  keys: dict[str, set[str]] = {}
  for run in runs:
    for key, value in run.bindings.items():
      keys.setdefault(key, set()).add(value)
  return [key for key, values in keys.items() if len(values) > 1]


def _as_float(text: str) -> float | None:
  try:
    return float(text)
  except ValueError:
    return None


def strength_key(runs: Sequence[Run], seed_key: str) -> str | None:
  """The first varying, numeric, non-seed key of any sweep (None: nothing to plot against)."""
  for key in varying_keys(runs):
    if key != seed_key and all(_as_float(r.bindings[key]) is not None for r in runs if key in r.bindings):
      return key
  return None


def group_runs(runs: Sequence[Run], x_keys: dict[str, str | None], seed_key: str) -> list[Group]:
  """Groups runs over seeds; series = sweep name (if several) + the other varying bindings.

  `x_keys` maps each sweep name to its strength key (sweeps compared side by side may sweep
  different keys, e.g. `L2.scale` and `DecoupledWeightDecay.rate`).
  """
  several_sweeps = len({run.sweep for run in runs}) > 1
  series_keys = [k for k in varying_keys(runs) if k != seed_key and k not in x_keys.values()]
  grouped: dict[tuple[str, float], list[Run]] = {}
  for run in runs:
    parts = ([run.sweep] if several_sweeps else []) + [f"{k}={run.bindings[k]}" for k in series_keys
                                                        if k in run.bindings]
    x_key = x_keys.get(run.sweep)
    x = _as_float(run.bindings.get(x_key, "nan")) if x_key else math.nan
    grouped.setdefault((", ".join(parts) or "all", x), []).append(run)
  groups = [_group(series, x, members, seed_key) for (series, x), members in grouped.items()]
  return sorted(groups, key=lambda g: (g.series, g.x))


def _group(series: str, x: float, runs: list[Run], seed_key: str) -> Group:
  mean, std, ci = {}, {}, {}
  for column in COLUMNS:
    values = [run.values[column.name] for run in runs if column.name in run.values]
    if values:
      mean[column.name], std[column.name], ci[column.name] = intervals.summarize(values)
  bindings = {k: v for k, v in runs[0].bindings.items() if k != seed_key}
  return Group(series, x, bindings, runs, mean, std, ci)


def present_columns(runs: Sequence[Run]) -> list[str]:
  """The names of the columns that at least one of `runs` has a value for, in `COLUMNS` order."""
  return [c.name for c in COLUMNS if any(c.name in run.values for run in runs)]


def _number(value: float | None) -> str:
  """A CSV cell: full precision, empty for a missing or undefined (NaN) value."""
  return "" if value is None or math.isnan(value) else repr(value)


def write_runs_csv(path: str, runs: Sequence[Run]) -> None:
  keys = list(dict.fromkeys(k for run in runs for k in run.bindings))
  columns = present_columns(runs)
  with open(path, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["sweep", "run"] + keys + columns)
    for run in runs:
      writer.writerow([run.sweep, run.name] + [run.bindings.get(k, "") for k in keys]
                      + [_number(run.values.get(c)) for c in columns])


def write_summary_csv(path: str, groups: Sequence[Group], columns: Sequence[str]) -> None:
  with open(path, "w", newline="") as file:
    writer = csv.writer(file)
    stats = ("mean", "std", "ci95")
    writer.writerow(["series", "x", "n"] + [f"{c}_{stat}" for c in columns for stat in stats])
    for g in groups:
      writer.writerow([g.series, g.x, len(g.runs)] + [
          _number(stats.get(c)) for c in columns for stats in (g.mean, g.std, g.ci)])


def markdown_table(groups: Sequence[Group], columns: Sequence[str], x_key: str | None) -> str:
  """`| [series |] x | n | column ... |` with `mean ± half-width` cells (`INTERVAL_NOTE`), then the note.

  The series column is left out when there is one series; a cell is empty when no run has the value.
  """
  several = len({g.series for g in groups}) > 1
  header = (["series"] if several else []) + [x_key or "x", "n"] + list(columns)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for g in groups:
    cells = ([g.series] if several else []) + [f"{g.x:g}", str(len(g.runs))]
    cells += [cell(g, c) for c in columns]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + f"\n\n{INTERVAL_NOTE}\n"


@dataclasses.dataclass
class Report:
  """What `build` produced: the data, for callers that check claims, and the written files."""
  runs: list[Run]
  groups: list[Group]
  x_label: str | None
  markdown: str
  files: dict[str, str]


def build(sweep_dirs: Sequence[str], out_dir: str, *, x_key: str | None = None,
          seed_key: str = "Trainer.seed", panels: Sequence[str] = DEFAULT_PANELS,
          curves: Sequence[str] = DEFAULT_CURVES, table: Sequence[str] = DEFAULT_TABLE,
          style: plots.PlotStyle = plots.DEFAULT_STYLE) -> Report:
  """Loads the sweeps and writes the tables and plots into `out_dir`."""
  runs = [run for sweep_dir in sweep_dirs for run in load_sweep(sweep_dir)]
  if not runs:
    raise ValueError(f"no finished runs in {list(sweep_dirs)}")
  sweeps = dict.fromkeys(run.sweep for run in runs)
  x_keys = {name: x_key or strength_key([r for r in runs if r.sweep == name], seed_key) for name in sweeps}
  label = " / ".join(dict.fromkeys(k for k in x_keys.values() if k)) or None
  groups = group_runs(runs, x_keys, seed_key)
  columns = present_columns(runs)
  os.makedirs(out_dir, exist_ok=True)
  files = {name: os.path.join(out_dir, name) for name in ("runs.csv", "summary.csv", "summary.md")}
  write_runs_csv(files["runs.csv"], runs)
  write_summary_csv(files["summary.csv"], groups, columns)
  markdown = markdown_table(groups, [c for c in table if c in columns], label)
  with open(files["summary.md"], "w") as file:
    file.write(markdown)
  panel_columns = [COLUMN_BY_NAME[name] for name in panels]
  figures = {"vs_strength": plots.plot_vs_strength(groups, panel_columns, label, style) if label else None,
             "curves": plots.plot_curves(groups, curves, label, style)}
  for name, figure in figures.items():
    if figure is not None:
      files.update(plots.save(figure, out_dir, name, style))
  for sweep_dir in sweep_dirs:  # A study (occam-tune) adds its own views: history, importances, slice.
    views = study_storage.write_record_views(sweep_dir, out_dir)
    files.update({os.path.basename(path): path for path in views.values()})
  return Report(runs, groups, label, markdown, files)


def _names(text: str) -> list[str]:
  return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The command line of `occam-report`; columns, formats, dpi and font size are checked."""
  parser = argparse.ArgumentParser(prog="occam-report", description=__doc__.split("\n\n")[0].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("sweep_dirs", nargs="+", help="sweep directories written by occam-sweep")
  parser.add_argument("--out_dir", required=True, help="where the tables and plots are written")
  parser.add_argument("--x", default=None, help="the strength key (default: detected)")
  parser.add_argument("--seed_key", default="Trainer.seed", help="averaged over (mean and 95%% CI)")
  parser.add_argument("--panels", default=",".join(DEFAULT_PANELS),
                      help=f"columns plotted against strength; any of {', '.join(COLUMN_BY_NAME)}")
  parser.add_argument("--curves", default=",".join(DEFAULT_CURVES),
                      help="'dir/tag' curves against step, e.g. train/penalty/model_losses")
  parser.add_argument("--table", default=",".join(DEFAULT_TABLE),
                      help="the columns of summary.md (summary.csv and runs.csv have every column)")
  parser.add_argument("--formats", default="png",
                      help=f"plot file formats, any of {', '.join(plots.FORMATS)}")
  parser.add_argument("--dpi", type=float, default=plots.DEFAULT_DPI,
                      help=f"pixels per inch of PNGs (a panel is {plots.PANEL_INCHES[0]:g} x "
                           f"{plots.PANEL_INCHES[1]:g} inches)")
  parser.add_argument("--font_size", type=float, default=plots.DEFAULT_FONT_SIZE,
                      help="points, for every text")
  parser.add_argument("--title", default="", help="figure title")
  args = parser.parse_args(argv)
  args.panels, args.table, args.curves = _names(args.panels), _names(args.table), _names(args.curves)
  for flag in ("panels", "table"):
    unknown = sorted(set(getattr(args, flag)) - set(COLUMN_BY_NAME))
    if unknown:
      parser.error(f"--{flag}: unknown columns {unknown}; known: {list(COLUMN_BY_NAME)}")
  args.formats = _names(args.formats)
  if not args.formats or set(args.formats) - set(plots.FORMATS):
    parser.error(f"--formats={','.join(args.formats)}: choose from {', '.join(plots.FORMATS)}")
  for flag in ("dpi", "font_size"):
    if not getattr(args, flag) > 0:
      parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of `occam-report`: reports on the sweeps in `argv` (default: sys.argv[1:]); exit code."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  style = plots.PlotStyle(tuple(args.formats), args.dpi, args.font_size, args.title)
  try:
    report = build(args.sweep_dirs, args.out_dir, x_key=args.x, seed_key=args.seed_key,
                   panels=args.panels, curves=args.curves, table=args.table, style=style)
  except (ValueError, OSError) as error:
    print(f"report: error: {error}", file=sys.stderr)
    return sweep.EXIT_BAD_INPUT
  print(report.markdown)
  for path in report.files.values():
    print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
