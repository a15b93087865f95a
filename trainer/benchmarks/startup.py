"""The startup section: from process start to the first training step, Occam against Keras `fit`.

`python -m trainer.main` on the quickstart against the same run as a Keras `fit` program
(`trainer.benchmarks.fit_quickstart`), interleaved after one warm-up each (the first process reads
TensorFlow's libraries from disk), `repeats` times each (medians); where the time goes (imports,
building, first step) and peak RSS.

Occam's first step is the first `train | step: 1/` log line (steps_per_loop=1), so it includes what
Occam does at the first loop's end (the Monitor's statistics, the summaries); `fit`'s is its first
`on_train_batch_end` after the step counter reads 1. Each figure is [wall, the child's CPU time].
"""

from __future__ import annotations

import re
import resource
import sys
import tempfile

import numpy as np

from trainer.benchmarks import fit_quickstart
from trainer.benchmarks.children import time_child
from trainer.benchmarks.report import Report, show_seconds, show_signed_seconds

# What marks the end of each start-up phase in a child's output: imports (and for Occam: gin parsed,
# the strategy created), building the model/run, and the first training step done.
PHASES = ("imports", "build", "first step")
OCCAM_MARKERS = (r"\] strategy: ", r"\] starting from ", r"\] train \| step: 1/")
FIT_MARKERS = tuple(re.escape(marker) for marker in fit_quickstart.MARKERS)
FIT_COMMAND = (sys.executable, "-m", "trainer.benchmarks.fit_quickstart")


def occam_command(model_dir: str) -> list[str]:
  """The 2-step quickstart through Occam's command line, logging every step, in `model_dir`."""
  return [sys.executable, "-m", "trainer.main", "--gin_file=gin_configs/quickstart.gin",
          f"--model_dir={model_dir}", "--gin_bindings=Trainer.train_steps=2",
          "--gin_bindings=Trainer.steps_per_loop=1"]


def section_startup(report: Report, model_dir: str, repeats: int) -> None:
  """Adds the startup rows to `report` (each child's run in a fresh directory under `model_dir`)."""
  time_child(occam_command(tempfile.mkdtemp(dir=model_dir)), OCCAM_MARKERS)
  # The largest RSS of any child so far is the Occam run's.
  peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  time_child(FIT_COMMAND, FIT_MARKERS)
  occam, fit, whole = [], [], []
  for _ in range(repeats):
    seen, total = time_child(occam_command(tempfile.mkdtemp(dir=model_dir)), OCCAM_MARKERS)
    occam.append(seen)
    whole.append(total)
    fit.append(time_child(FIT_COMMAND, FIT_MARKERS)[0])
  occam, fit = np.array(occam), np.array(fit)  # [repeats, phases, (wall, cpu)]
  occam_median, fit_median = np.median(occam, axis=0), np.median(fit, axis=0)
  report.add("startup", "occam: process start -> first train step", occam_median[-1],
             f"(quickstart, steps_per_loop=1; median of {repeats}; cpu: the child's own)", show=show_seconds)
  report.add("startup", "fit: process start -> first train step", fit_median[-1],
             "(same data, model, L2, Adam, schedule, batch)", show=show_seconds)
  report.add("startup", "occam - fit", np.median(occam[:, -1] - fit[:, -1], axis=0),
             "(median of the paired differences)", show=show_signed_seconds)
  for name, times in (("occam", occam_median), ("fit", fit_median)):
    for phase, seconds in zip(PHASES, np.diff(times, axis=0, prepend=0.0)):
      report.add("startup", f"{name} phase: {phase}", seconds, show=show_seconds)
  report.add("startup", "occam: whole 2-step quickstart run", f"{np.median(whole):.1f} s")
  report.add("startup", "occam: peak RSS of that run", f"{peak_kib / 1024:.0f} MiB")
