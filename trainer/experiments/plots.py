"""`occam-report`'s figures: values against strength and training curves, over seeds, ready to show.

Each grid point (`report_data.Group`: the runs that differ only in the seed) is drawn as its mean over
seeds with the 95% confidence interval of that mean as a band (`trainer.experiments.intervals`), one
line per point rather than one per seed. The star marks the best-validation point (`VALIDATION`: the
strength, or the step, whose mean validation accuracy is best) on every panel, so it sits at the
same strength on all of them; the highest train accuracy or the most negative gap is not "best". Panels are
`PANEL_INCHES` with text at `font_size` points and axis labels; files are PNG at `dpi`, PDF (TrueType
fonts) or SVG (text kept as text), so a figure can be edited and goes on a slide or into a paper.

Figures are bare matplotlib `Figure`s, not pyplot: importing the report (as `results` does in a
notebook) neither needs matplotlib nor changes the caller's backend; each format's own canvas (Agg
for PNG) writes the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from typing import Callable, Sequence

import numpy as np

from trainer.experiments import intervals
from trainer.experiments.report_data import Column, Group
from trainer.metrics import tags

FORMATS = ("png", "pdf", "svg")
PANEL_INCHES = (4.0, 3.0)  # One panel: a column of a two-column paper page, or a third of a slide.
DEFAULT_DPI = 150  # A 4 x 3 inch panel is 600 x 450 pixels.
DEFAULT_FONT_SIZE = 10.0  # points, at PANEL_INCHES: readable in print at full size and on a slide


@dataclasses.dataclass(frozen=True)
class PlotStyle:
  """How plots are written: `formats` (png, pdf, svg), raster `dpi`, `font_size` in points, a title."""
  formats: tuple[str, ...] = ("png",)
  dpi: float = DEFAULT_DPI
  font_size: float = DEFAULT_FONT_SIZE
  title: str = ""


DEFAULT_STYLE = PlotStyle()


@contextlib.contextmanager
def _style(style: PlotStyle):
  """Fonts at `style.font_size`; text stays text in SVG and TrueType in PDF (editable, searchable)."""
  import matplotlib
  size = style.font_size
  with matplotlib.rc_context({
      "font.size": size, "axes.titlesize": size, "axes.labelsize": size, "xtick.labelsize": size * 0.9,
      "ytick.labelsize": size * 0.9, "legend.fontsize": size * 0.8, "figure.titlesize": size * 1.1,
      "svg.fonttype": "none", "pdf.fonttype": 42, "axes.grid": True, "grid.alpha": 0.3}):
    yield


def _figure(num_panels: int):
  """A row of `num_panels` panels of PANEL_INCHES each: (figure, list of axes)."""
  from matplotlib import figure as mpl_figure
  fig = mpl_figure.Figure(figsize=(PANEL_INCHES[0] * num_panels, PANEL_INCHES[1]))
  return fig, list(fig.subplots(1, num_panels, squeeze=False)[0])


# The tags a best point is chosen by, the first a sweep has: validation accuracy, else loss (regression).
VALIDATION = ("eval/accuracy", "eval/loss")
MAX_VALUE_TICKS = 6  # at most this many strengths are each a tick, at least MIN_TICK_DECADES apart;
MIN_TICK_DECADES = 0.3  # otherwise (a study's sampled values) the axis has decade ticks


def _x_axis(axis, xs: Sequence[float]) -> Callable[[float], float]:
  """Puts the strengths `xs` on `axis` as a log axis on which 0 sits one decade left of the smallest
  positive one; returns the map from strength to position.

  A grid's few strengths are each a tick labelled with its value; a study's many sampled values would
  overprint (0.00151193 over 0.00156767), so they get the decades in between instead (1e-4, 1e-3, ...).
  """
  positive = sorted({x for x in xs if x > 0})
  zero_at = positive[0] / 10 if positive else 1.0
  to_position = lambda x: zero_at if x == 0 else x  # noqa: E731
  values = sorted(set(xs))
  positions = [to_position(x) for x in values]
  if len(values) <= MAX_VALUE_TICKS and np.all(np.diff(np.log10(positions)) >= MIN_TICK_DECADES):
    ticks, labels = positions, [f"{x:g}" for x in values]
  else:
    low, high = math.floor(math.log10(positive[0])), math.ceil(math.log10(positive[-1]))
    stride = max(1, math.ceil((high - low + 1) / MAX_VALUE_TICKS))
    ticks = [10.0 ** e for e in range(low, high + 1, stride)
             if 0 not in values or abs(e - math.log10(zero_at)) >= MIN_TICK_DECADES]
    labels = [f"1e{round(math.log10(t))}" for t in ticks]
    if 0 in values:
      ticks, labels = [zero_at] + ticks, ["0"] + labels
  axis.set_xscale("log")
  axis.set_xticks(ticks, labels, rotation=45)
  axis.minorticks_off()
  return to_position


def _validation_tag(present: Callable[[tags.Tag], bool]) -> tags.Tag | None:
  """The first `VALIDATION` tag `present` says the sweep has."""
  return next((entry for entry in map(tags.find, VALIDATION) if present(entry)), None)


def _best_index(values: Sequence[float], higher_is_better: bool) -> int | None:
  """The index of the best finite value (the first of equals), None without one."""
  finite = [(index, value) for index, value in enumerate(values) if not math.isnan(value)]
  if not finite:
    return None
  return (max if higher_is_better else min)(finite, key=lambda item: item[1])[0]


def best_strengths(groups: Sequence[Group]) -> tuple[str, dict[str, float]] | None:
  """The validation column (`VALIDATION`) and, per series, the strength whose mean over seeds is best
  by it; None when no group has a validation column."""
  entry = _validation_tag(lambda e: any(e.column in g.mean for g in groups))
  if entry is None:
    return None
  best = {}
  for series in dict.fromkeys(g.series for g in groups):
    members = [g for g in groups if g.series == series and entry.column in g.mean]
    index = _best_index([g.mean[entry.column] for g in members], entry.higher_is_better)
    if index is not None:
      best[series] = members[index].x
  return entry.column, best


def _best_steps(groups: Sequence[Group]) -> tuple[str, list[int | None]] | None:
  """The validation tag and, per group, the step whose mean validation value over seeds is best."""
  curve = lambda entry: f"{entry.directory}/{entry.pattern}"  # noqa: E731
  entry = _validation_tag(lambda e: any(curve(e) in run.scalars for g in groups for run in g.runs))
  if entry is None:
    return None
  steps = []
  for group in groups:
    index = None
    if any(curve(entry) in run.scalars for run in group.runs):
      at, means, _ = _mean_curves(group, curve(entry))
      index = _best_index(list(means), entry.higher_is_better)
    steps.append(None if index is None else int(at[index]))
  return entry.pattern, steps


def _star(axis, x: float, y: float, colour) -> None:
  """The best-validation point of a line."""
  axis.plot([x], [y], marker="*", markersize=12, color=colour, markeredgecolor="black", linestyle="none",
            zorder=3)


def _legend(axis, title: str | None, best: str | None) -> None:
  """The axis' legend, with one white star standing for every series' best point (`best`: by what)."""
  if best:
    axis.plot([], [], marker="*", markersize=10, color="white", markeredgecolor="black", linestyle="none",
              label=f"best {best}")
  axis.legend(title=title)


def _band(axis, xs, means, halfwidths, colour, label: str) -> None:
  """The mean as a line with markers and its 95% interval as a band (none where it is undefined)."""
  means, halfwidths = np.asarray(means, float), np.asarray(halfwidths, float)
  axis.plot(xs, means, marker="o", markersize=3, linewidth=1.2, color=colour, label=label)
  if not np.all(np.isnan(halfwidths)):
    axis.fill_between(xs, means - halfwidths, means + halfwidths, color=colour, alpha=0.2, linewidth=0)


def _colours(count: int, sequential: bool):
  from matplotlib import colormaps
  if sequential:  # strengths of one series: dark to light in order
    return colormaps["viridis"](np.linspace(0, 0.85, max(count, 1)))
  return [colormaps["tab10"](index % 10) for index in range(count)]


def plot_vs_strength(groups: Sequence[Group], columns: Sequence[Column], x_key: str, style: PlotStyle):
  """One panel per column some group has: the mean over seeds against strength and its 95% band, each
  series' best-validation strength (`best_strengths`) starred on every panel. Returns the figure (axes
  titled with the columns drawn), or None.
  """
  columns = [c for c in columns if any(c.name in g.mean for g in groups)]
  if not columns or not groups:
    return None
  series_names = list(dict.fromkeys(g.series for g in groups))
  validation, best = best_strengths(groups) or (None, {})
  with _style(style):
    figure, axes = _figure(len(columns))
    for axis, column in zip(axes, columns):
      to_position = _x_axis(axis, [g.x for g in groups])
      for colour, series in zip(_colours(len(series_names), False), series_names):
        members = [g for g in groups if g.series == series and column.name in g.mean]
        _band(axis, [to_position(g.x) for g in members], [g.mean[column.name] for g in members],
              [g.ci[column.name] for g in members], colour, "mean, 95% CI" if series == "all" else series)
        for g in members:
          if series in best and g.x == best[series] and not math.isnan(g.mean[column.name]):
            _star(axis, to_position(g.x), g.mean[column.name], colour)
      axis.set_title(column.name)
      axis.set_xlabel(x_key)
      axis.set_ylabel(column.label)
    _legend(axes[0], None, validation if best else None)
    _finish(figure, style)
  return figure


def _mean_curves(group: Group, tag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean over seeds, 95% half-width) of `tag` in `group`'s runs; a step a run wrote twice
  counts with its last value; a step only some runs reached is averaged over those."""
  import pandas as pd
  rows = [(index, step, value) for index, run in enumerate(group.runs)
          for step, value in run.scalars.get(tag, [])]
  frame = pd.DataFrame(rows, columns=["run", "step", "value"]).drop_duplicates(["run", "step"], keep="last")
  stats = frame.groupby("step")["value"].agg(["mean", "std", "count"])
  halfwidths = [intervals.halfwidth(std, int(n)) for std, n in zip(stats["std"], stats["count"])]
  return stats.index.to_numpy(), stats["mean"].to_numpy(), np.asarray(halfwidths, float)


def plot_curves(groups: Sequence[Group], curves: Sequence[str], x_key: str | None, style: PlotStyle):
  """One panel per present `dir/tag`: per group the mean over its seeds against step and the 95% band,
  its best-validation step (`_best_steps`) starred on every panel; the legend is titled with the
  strength key. Returns the figure (axes titled with the tags drawn), or None."""
  curves = [t for t in curves if any(t in run.scalars for g in groups for run in g.runs)]
  if not curves:
    return None
  colours = _colours(len(groups), sequential=len({g.series for g in groups}) == 1)
  validation, best_steps = _best_steps(groups) or (None, [None] * len(groups))
  with _style(style):
    figure, axes = _figure(len(curves))
    for axis, tag in zip(axes, curves):
      for colour, group, best_step in zip(colours, groups, best_steps):
        if any(tag in run.scalars for run in group.runs):
          steps, means, halfwidths = _mean_curves(group, tag)
          _band(axis, steps, means, halfwidths, colour, group.label)
          if best_step is not None:  # this curve's point nearest the best-validation step
            index = int(np.argmin(np.abs(steps - best_step)))
            _star(axis, steps[index], means[index], colour)
      axis.set_title(tag.split("/", 1)[1])
      axis.set_xlabel("step")
      axis.set_ylabel(tag.split("/", 1)[1])
    _legend(axes[0], x_key, validation if any(s is not None for s in best_steps) else None)
    _finish(figure, style)
  return figure


def _finish(figure, style: PlotStyle) -> None:
  if style.title:
    figure.suptitle(style.title)
  figure.tight_layout()


def save(figure, out_dir: str, name: str, style: PlotStyle) -> dict[str, str]:
  """Writes `figure` as `out_dir/name.FORMAT` for each of `style.formats`; {file name: path}."""
  files = {}
  with _style(style):
    for extension in style.formats:
      files[f"{name}.{extension}"] = path = os.path.join(out_dir, f"{name}.{extension}")
      figure.savefig(path, dpi=style.dpi)
  return files


STUDY_VIEWS = ("history", "importances", "slice")  # Optuna's views of a study (occam-tune), drawn by it


def study_views(study, metric: str) -> tuple[dict, dict[str, str]]:
  """Optuna's `STUDY_VIEWS` of `study`: ({view: pyplot figure}, {view: why it is not drawn}).

  The value axis is named after `metric` (Optuna's default says "Objective Value"). No view before two
  complete trials; no importances with one searched parameter (its importance is 1 by definition).
  Optuna draws with pyplot, so this selects the Agg backend; close the figures when done.
  """
  import matplotlib
  matplotlib.use("Agg")
  import optuna
  import optuna.visualization.matplotlib as views
  from optuna.trial import TrialState
  complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
  if len(complete) < 2:
    return {}, dict.fromkeys(STUDY_VIEWS, f"{len(complete)} complete trial(s), a view needs two")
  searched = sorted({name for trial in complete for name in trial.params})
  skipped = {}
  if len(searched) < 2:
    skipped["importances"] = (f"one searched parameter ({', '.join(searched) or 'none'}), whose "
                              "importance is 1 by definition")
  draw = {"history": views.plot_optimization_history, "importances": views.plot_param_importances,
          "slice": views.plot_slice}
  figures = {}
  for name in STUDY_VIEWS:
    if name in skipped:
      continue
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      try:
        figures[name] = np.ravel(draw[name](study, target_name=metric))[0].figure
      except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. constant values
        skipped[name] = f"Optuna could not draw it: {error}"
  return figures, skipped


def write_study_views(study, metric: str, out_dir: str, prefix: str = "") -> tuple[dict[str, str],
                                                                                   dict[str, str]]:
  """`study_views` as `out_dir/<prefix><view>.png` at `DEFAULT_DPI` (Optuna's 6.4 x 4.8 inch figures:
  ~960 x 720 pixels): ({view: path}, {view: why it is not drawn})."""
  from matplotlib import pyplot
  figures, skipped = study_views(study, metric)
  written = {}
  for name, figure in figures.items():
    written[name] = os.path.join(out_dir, f"{prefix}{name}.png")
    figure.savefig(written[name], dpi=DEFAULT_DPI, bbox_inches="tight")
    pyplot.close(figure)
  return written, skipped
