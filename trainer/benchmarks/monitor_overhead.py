"""Measures the cost of the default `Monitor` metric set on the quickstart (docs/METRICS.md).

    python scripts/metrics_overhead.py --repeats=5

Runs the quickstart in process, alternating a run with `Monitor()` (defaults) and one whose monitor
computes nothing (`occam.MonitorOff` with `train_eval_examples=0`), `--repeats` times each. Each run
is built through Occam's public seams (`register_all`, `parsing.parse`, `Trainer(monitor=...)`,
`builder.build`) and trained by `driver.train`, as `trainer.train` does: first, untimed, up to the
first evaluation step at or after `--warmup_steps` (a stop condition), so that every `tf.function` is
traced, the summary writers' included (the loop there evaluates, the stop saves a checkpoint and the
test split is evaluated: the tag sets of the timed part); then, timed, `--steps` more steps (loops,
evaluations, checkpoints as configured). Prints the median and the fastest wall time of each variant,
the A/B overhead by both, and (less sensitive to a busy machine) the time spent inside the monitor's
calls divided by the rest of the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Sequence

import tensorflow as tf

from trainer.benchmarks import occam
from trainer.benchmarks.children import REPO
from trainer.config import parsing, registry
from trainer.loop import builder, driver
from trainer.loop.settings import Trainer
from trainer.metrics.monitor import Monitor

QUICKSTART = os.path.join(REPO, "gin_configs", "quickstart.gin")


def timed_run(monitor: Monitor, warmup_end: int) -> tuple[float, float]:
  """Seconds to train the configured steps after a warm-up to step `warmup_end`, in a fresh model_dir, and
  the seconds of those the run's Monitor (built from the spec `monitor`) spent in its calls."""
  strategy = tf.distribute.get_strategy()
  with tempfile.TemporaryDirectory() as model_dir:
    run, timed = occam.timed_monitor(builder.build(Trainer(monitor=monitor), strategy=strategy,
                                                   model_dir=model_dir, is_chief=True))
    driver.train(run, builder.open_checkpointers(run), restored=None,
                 stop_conditions=[lambda: int(run.step.numpy()) >= warmup_end])
    timed.seconds[:] = 0.0
    started = time.perf_counter()
    driver.train(run, builder.open_checkpointers(run), restored=None)
    return time.perf_counter() - started, float(timed.seconds[0])


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/metrics_overhead.py`."""
  parser = argparse.ArgumentParser(prog="metrics_overhead.py", description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (interleaved)")
  parser.add_argument("--warmup_steps", type=int, default=200,
                      help="untimed steps that trace every compiled function (rounded up to the next "
                           "evaluation step)")
  parser.add_argument("--steps", type=int, default=2000, help="timed steps (the quickstart's length)")
  args = parser.parse_args(argv)
  registry.register_all()
  parsing.parse([QUICKSTART], [])
  # The warm-up ends at an evaluation step: there the loop evaluates and the final evaluation is the
  # test split's alone, which traces the summary tag sets the timed part writes.
  eval_every = Trainer().eval_every
  warmup_end = -(-args.warmup_steps // eval_every) * eval_every
  parsing.parse([QUICKSTART], [f"Trainer.train_steps = {warmup_end + args.steps}"])
  times, fractions = {"default": [], "off": []}, []
  for _ in range(args.repeats):
    seconds, monitor_seconds = timed_run(Monitor(), warmup_end)
    times["default"].append(seconds)
    fractions.append(monitor_seconds / (seconds - monitor_seconds))
    times["off"].append(timed_run(occam.MonitorOff(train_eval_examples=0), warmup_end)[0])
  for name, values in times.items():
    print(f"{name}: median {statistics.median(values):.3f}s, fastest {min(values):.3f}s over "
          f"{args.steps} steps; runs " + ", ".join(f"{v:.3f}" for v in values))
  for label, reduce in (("median", statistics.median), ("fastest", min)):
    overhead = reduce(times["default"]) / reduce(times["off"]) - 1
    print(f"A/B overhead of the default metric set ({label}): {overhead:+.1%}")
  print(f"time in Monitor calls / rest of the run: median {statistics.median(fractions):.1%}; runs "
        + ", ".join(f"{f:.1%}" for f in fractions))
  return 0
