r"""Tables and plots of one or more sweeps (`occam-sweep`), read from their event files.

    occam-report /tmp/sweeps/l2 [/tmp/sweeps/adamw ...] --out_dir=/tmp/sweeps/report

Writes to `--out_dir`:
  runs.csv            one row per run: its bindings and every column below (full float precision)
  summary.csv         one row per grid point without the seed: n, mean and std of every column
  summary.md          the same as a Markdown table, `mean ± std` (sample std over seeds)
  vs_strength.png     each `--panels` column against the strength (log x axis; 0 drawn at the left)
  curves.png          training curves (`--curves` tags against step), one line per run
  NAME_history.png    for a study directory (`occam-tune`): its optimization history, parameter
  NAME_importances.png  importances and slice plot, drawn by Optuna (when it has 2+ complete trials)
  NAME_slice.png

The columns derive from the tag registry (`trainer.metrics.tags`): each tag with a column name gives
that column (its value at the run's last step) and, if every evaluation writes it and it has a better
direction, `best_<column>` (its best value over the evaluations). Plotting needs matplotlib (the
`experiments` extra); loading and the tables do not.

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
import statistics
import sys
from typing import Callable, Sequence

import numpy as np

from trainer.experiments import sweep, tune
from trainer.metrics import tags

Scalars = dict[str, list[tuple[int, float]]]  # "dir/tag" -> [(step, value), ...], in the order written
EVENT_DIRS = (tags.TRAIN, tags.EVAL)  # The event directories below a run's model_dir that hold scalars.


@dataclasses.dataclass(frozen=True)
class Column:
  """A table column: `reduce` over the (step, value) series of `tag` in the run's `event_dir`."""
  name: str
  event_dir: str
  tag: str
  reduce: Callable[[list[tuple[int, float]]], float]


def final(series: list[tuple[int, float]]) -> float:
  """The last value written at the largest step (a resumed or restored run may log a step twice)."""
  last_step = max(step for step, _ in series)
  return [value for step, value in series if step == last_step][-1]


def best_max(series: list[tuple[int, float]]) -> float:
  return max(value for _, value in series)


def best_min(series: list[tuple[int, float]]) -> float:
  return min(value for _, value in series)


def derive_columns(registry: dict[str, tags.Tag]) -> tuple[Column, ...]:
  """The table columns of `registry` ({column name: Tag}, see `tags.columns()`), in its order.

  Each tag gives its final value under its column name and, when every evaluation writes it and it
  has a better direction, its best value over the run as `best_<name>` (right after it).
  """
  columns = []
  for name, tag in registry.items():
    columns.append(Column(name, tag.directory, tag.pattern, final))
    if tag.evaluated and tag.higher_is_better is not None:
      columns.append(Column(f"best_{name}", tag.directory, tag.pattern,
                            best_max if tag.higher_is_better else best_min))
  return tuple(columns)


COLUMNS = derive_columns(tags.columns())
COLUMN_BY_NAME = {column.name: column for column in COLUMNS}
DEFAULT_PANELS = ("eval_acc", "train_acc", "gap_acc")
DEFAULT_CURVES = ("train/train/data_loss", "eval/eval/accuracy")
PANEL_INCHES, DPI = (4.0, 3.0), 72  # One panel is 288 x 216 pixels.


@dataclasses.dataclass
class Run:
  """One finished point of a sweep: where it is, its bindings, its scalars and table values."""
  sweep: str
  name: str
  bindings: dict[str, str]
  scalars: Scalars
  values: dict[str, float]


@dataclasses.dataclass
class Group:
  """Runs that differ only in the seed: the series they belong to, the strength, and statistics."""
  series: str
  x: float
  bindings: dict[str, str]
  runs: list[Run]
  mean: dict[str, float]
  std: dict[str, float]


def read_run(model_dir: str) -> Scalars:
  """Every float scalar of the run in `model_dir` as {'dir/tag': [(step, value), ...]}, in the order written.

  The one reader of a run's scalars, for the report and for `trainer.experiments.results`. A resumed
  run may hold a step twice; the later value is the one that counts.
  """
  # Imported here: TensorBoard's reader pulls in TensorFlow, which only loading needs.
  from trainer.metrics import events
  return {f"{directory}/{tag}": series for directory in EVENT_DIRS
          for tag, series in events.read_scalars(os.path.join(model_dir, directory)).items()}


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
  mean, std = {}, {}
  for column in COLUMNS:
    values = [run.values[column.name] for run in runs if column.name in run.values]
    if values:
      mean[column.name] = statistics.fmean(values)
      std[column.name] = statistics.stdev(values) if len(values) > 1 else 0.0
  bindings = {k: v for k, v in runs[0].bindings.items() if k != seed_key}
  return Group(series, x, bindings, runs, mean, std)


def present_columns(runs: Sequence[Run]) -> list[str]:
  """The names of the columns that at least one of `runs` has a value for, in `COLUMNS` order."""
  return [c.name for c in COLUMNS if any(c.name in run.values for run in runs)]


def write_runs_csv(path: str, runs: Sequence[Run]) -> None:
  keys = list(dict.fromkeys(k for run in runs for k in run.bindings))
  columns = present_columns(runs)
  with open(path, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["sweep", "run"] + keys + columns)
    for run in runs:
      writer.writerow([run.sweep, run.name] + [run.bindings.get(k, "") for k in keys]
                      + [repr(run.values[c]) if c in run.values else "" for c in columns])


def write_summary_csv(path: str, groups: Sequence[Group], columns: Sequence[str]) -> None:
  with open(path, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["series", "x", "n"] + [f"{c}_{stat}" for c in columns for stat in ("mean", "std")])
    for g in groups:
      writer.writerow([g.series, g.x, len(g.runs)] + [
          repr(stats[c]) if c in stats else "" for c in columns for stats in (g.mean, g.std)])


def markdown_table(groups: Sequence[Group], columns: Sequence[str], x_key: str | None) -> str:
  """`| series | x | n | col ... |` with `mean ± std` cells (std over seeds; 0 for one seed)."""
  header = ["series", x_key or "x", "n"] + list(columns)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for g in groups:
    cells = [g.series, f"{g.x:g}", str(len(g.runs))]
    cells += [f"{g.mean[c]:.4g} ± {g.std[c]:.2g}" if c in g.mean else "" for c in columns]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _x_positions(xs: Sequence[float]) -> tuple[Callable[[float], float], list[float], list[str]]:
  """Maps strengths to a log axis on which 0 sits one decade left of the smallest positive one."""
  positive = sorted({x for x in xs if x > 0})
  zero_at = positive[0] / 10 if positive else 1.0
  ticks = sorted(set(xs))
  to_position = lambda x: zero_at if x == 0 else x  # noqa: E731
  return to_position, [to_position(x) for x in ticks], [f"{x:g}" for x in ticks]


def plot_vs_strength(path: str, groups: Sequence[Group], panels: Sequence[str], x_key: str,
                     title: str = "") -> list[str]:
  """One panel per present column, mean ± std over seeds against strength; returns the panels drawn."""
  panels = [p for p in panels if any(p in g.mean for g in groups)]
  if not panels or not groups:
    return []
  to_position, ticks, labels = _x_positions([g.x for g in groups])
  figure, axes = _figure(len(panels))
  for axis, column in zip(axes[0], panels):
    for series in dict.fromkeys(g.series for g in groups):
      members = [g for g in groups if g.series == series and column in g.mean]
      axis.errorbar([to_position(g.x) for g in members], [g.mean[column] for g in members],
                    yerr=[g.std[column] for g in members], marker="o", markersize=3, capsize=2,
                    label=series)
    axis.set_xscale("log")
    axis.set_xticks(ticks, labels, rotation=45, fontsize=7)
    axis.minorticks_off()
    axis.set_title(column, fontsize=9)
    axis.set_xlabel(x_key, fontsize=8)
    axis.grid(alpha=0.3)
  axes[0][0].legend(fontsize=6)
  _save(figure, path, title)
  return panels


def plot_curves(path: str, runs: Sequence[Run], curves: Sequence[str], groups: Sequence[Group],
                title: str = "") -> list[str]:
  """One panel per present `dir/tag`, one line per run; a group's runs share a colour."""
  curves = [t for t in curves if any(t in run.scalars for run in runs)]
  if not curves:
    return []
  from matplotlib import colormaps
  colours = colormaps["viridis"](np.linspace(0, 0.9, max(len(groups), 1)))
  figure, axes = _figure(len(curves))
  for axis, tag in zip(axes[0], curves):
    for colour, group in zip(colours, groups):
      for index, run in enumerate(group.runs):
        steps, values = zip(*sorted(run.scalars.get(tag, [(0, math.nan)])))
        label = f"{group.series} {group.x:g}" if index == 0 else None
        axis.plot(steps, values, color=colour, linewidth=0.8, label=label)
    axis.set_title(tag.split("/", 1)[1], fontsize=9)
    axis.set_xlabel("step", fontsize=8)
    axis.grid(alpha=0.3)
  axes[0][0].legend(fontsize=5)
  _save(figure, path, title)
  return curves


def _figure(num_panels: int):
  """A row of `num_panels` panels of PANEL_INCHES each: (figure, axes of shape [1, num_panels]).

  A bare `Figure`, not pyplot: importing the report (as `results` does in a notebook) neither needs
  matplotlib nor changes the caller's backend.
  """
  from matplotlib import figure as mpl_figure
  fig = mpl_figure.Figure(figsize=(PANEL_INCHES[0] * num_panels, PANEL_INCHES[1]))
  return fig, fig.subplots(1, num_panels, squeeze=False)


def _save(figure, path: str, title: str) -> None:
  """Small PNGs (they are committed with the docs): low dpi, tight layout."""
  if title:
    figure.suptitle(title, fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=DPI)


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
          curves: Sequence[str] = DEFAULT_CURVES, title: str = "") -> Report:
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
  markdown = markdown_table(groups, columns, label)
  with open(files["summary.md"], "w") as file:
    file.write(markdown)
  if label and plot_vs_strength(os.path.join(out_dir, "vs_strength.png"), groups, panels, label, title):
    files["vs_strength.png"] = os.path.join(out_dir, "vs_strength.png")
  if plot_curves(os.path.join(out_dir, "curves.png"), runs, curves, groups, title):
    files["curves.png"] = os.path.join(out_dir, "curves.png")
  for sweep_dir in sweep_dirs:  # A study (occam-tune) adds its own views: history, importances, slice.
    views = tune.write_record_views(sweep_dir, out_dir)
    files.update({os.path.basename(path): path for path in views.values()})
  return Report(runs, groups, label, markdown, files)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The command line of `occam-report`, with `--panels` checked against the known columns."""
  parser = argparse.ArgumentParser(prog="occam-report", description=__doc__.split("\n\n")[0].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("sweep_dirs", nargs="+", help="sweep directories written by occam-sweep")
  parser.add_argument("--out_dir", required=True, help="where the tables and plots are written")
  parser.add_argument("--x", default=None, help="the strength key (default: detected)")
  parser.add_argument("--seed_key", default="Trainer.seed", help="averaged over (mean ± std)")
  parser.add_argument("--panels", default=",".join(DEFAULT_PANELS),
                      help=f"columns plotted against strength; any of {', '.join(COLUMN_BY_NAME)}")
  parser.add_argument("--curves", default=",".join(DEFAULT_CURVES),
                      help="'dir/tag' curves against step, e.g. train/penalty/model_losses")
  parser.add_argument("--title", default="", help="figure title")
  args = parser.parse_args(argv)
  args.panels = [p for p in args.panels.split(",") if p]
  unknown = sorted(set(args.panels) - set(COLUMN_BY_NAME))
  if unknown:
    parser.error(f"--panels: unknown columns {unknown}; known: {list(COLUMN_BY_NAME)}")
  args.curves = [c for c in args.curves.split(",") if c]
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of `occam-report`: reports on the sweeps in `argv` (default: sys.argv[1:]); exit code."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    report = build(args.sweep_dirs, args.out_dir, x_key=args.x, seed_key=args.seed_key,
                   panels=args.panels, curves=args.curves, title=args.title)
  except (ValueError, OSError) as error:
    print(f"report: error: {error}", file=sys.stderr)
    return sweep.EXIT_BAD_INPUT
  print(report.markdown)
  for path in report.files.values():
    print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
