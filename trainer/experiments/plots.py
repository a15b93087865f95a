"""`occam-report`'s figures: values against strength and training curves, over seeds, ready to show.

Each grid point (`report_data.Group`: the runs that differ only in the seed) is drawn as its mean over
seeds with the 95% confidence interval of that mean as a band (`trainer.experiments.intervals`), one
line per point rather than one per seed, and the best point of each line starred. Panels are
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


def _x_positions(xs: Sequence[float]) -> tuple[Callable[[float], float], list[float], list[str]]:
  """Maps strengths to a log axis on which 0 sits one decade left of the smallest positive one."""
  positive = sorted({x for x in xs if x > 0})
  zero_at = positive[0] / 10 if positive else 1.0
  ticks = sorted(set(xs))
  to_position = lambda x: zero_at if x == 0 else x  # noqa: E731
  return to_position, [to_position(x) for x in ticks], [f"{x:g}" for x in ticks]


def _mark_best(axis, xs: Sequence[float], means: Sequence[float], higher_is_better: bool | None,
               colour) -> bool:
  """A star on the best of `means` (by the tag's direction); False (nothing drawn) for a tag without one."""
  finite = [(x, m) for x, m in zip(xs, means) if not math.isnan(m)]
  if higher_is_better is None or not finite:
    return False
  x, mean = (max if higher_is_better else min)(finite, key=lambda point: point[1])
  axis.plot([x], [mean], marker="*", markersize=12, color=colour, markeredgecolor="black",
            linestyle="none", zorder=3)
  return True


def _legend(axis, title: str | None, best: bool) -> None:
  """The axis' legend, with one white star standing for every series' best point."""
  if best:
    axis.plot([], [], marker="*", markersize=10, color="white", markeredgecolor="black", linestyle="none",
              label="best")
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
  """One panel per column some group has: the mean over seeds against strength, its 95% band, the best
  starred (by the column's direction). Returns the figure (axes titled with the columns drawn), or None.
  """
  columns = [c for c in columns if any(c.name in g.mean for g in groups)]
  if not columns or not groups:
    return None
  to_position, ticks, labels = _x_positions([g.x for g in groups])
  series_names = list(dict.fromkeys(g.series for g in groups))
  best = False
  with _style(style):
    figure, axes = _figure(len(columns))
    for axis, column in zip(axes, columns):
      for colour, series in zip(_colours(len(series_names), False), series_names):
        members = [g for g in groups if g.series == series and column.name in g.mean]
        xs = [to_position(g.x) for g in members]
        means = [g.mean[column.name] for g in members]
        _band(axis, xs, means, [g.ci[column.name] for g in members], colour,
              "mean, 95% CI" if series == "all" else series)
        best = _mark_best(axis, xs, means, column.higher_is_better, colour) or best
      axis.set_xscale("log")
      axis.set_xticks(ticks, labels, rotation=45)
      axis.minorticks_off()
      axis.set_title(column.name)
      axis.set_xlabel(x_key)
      axis.set_ylabel(column.label)
    _legend(axes[0], None, best)
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


def _direction(tag: str) -> bool | None:
  """Whether higher is better for a 'dir/tag' curve (None: neither, or not a registered tag)."""
  try:
    return tags.find(tag.split("/", 1)[1]).higher_is_better
  except tags.UnknownTagError:
    return None


def plot_curves(groups: Sequence[Group], curves: Sequence[str], x_key: str | None, style: PlotStyle):
  """One panel per present `dir/tag`: per group the mean over its seeds against step, the 95% band and
  the best point starred; the legend is titled with the strength key. Returns the figure (axes titled
  with the tags drawn), or None."""
  curves = [t for t in curves if any(t in run.scalars for g in groups for run in g.runs)]
  if not curves:
    return None
  colours = _colours(len(groups), sequential=len({g.series for g in groups}) == 1)
  best = False
  with _style(style):
    figure, axes = _figure(len(curves))
    for axis, tag in zip(axes, curves):
      direction = _direction(tag)
      for colour, group in zip(colours, groups):
        if any(tag in run.scalars for run in group.runs):
          steps, means, halfwidths = _mean_curves(group, tag)
          _band(axis, steps, means, halfwidths, colour, group.label)
          best = _mark_best(axis, steps, means, direction, colour) or best
      axis.set_title(tag.split("/", 1)[1])
      axis.set_xlabel("step")
      axis.set_ylabel(tag.split("/", 1)[1])
    _legend(axes[0], x_key, best)
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
