"""Measures the cost of the default `Monitor` metric set on the quickstart (docs/METRICS.md).

Runs the quickstart in process, alternating a run with `Monitor()` (defaults) and one whose monitor
computes nothing, `--repeats` times each. Each run is built through Occam's public seams
(`register_all`, `parsing.parse`, `Trainer(monitor=...)`, `builder.build`) and trained by
`driver.train`, as `trainer.train` does: first, untimed, up to the first evaluation step at or after
`--warmup_steps` (a stop condition), so that every `tf.function` is traced, the summary writers'
included (the loop there evaluates, the stop saves a checkpoint and the test split is evaluated:
the tag sets of the timed part); then, timed, `--steps` more steps (loops, evaluations, checkpoints
as configured). Prints the median and the fastest wall time of each variant, the A/B overhead by
both, and (less sensitive to a busy machine) the time spent inside the monitor's calls divided by
the rest of the same run.

  python scripts/metrics_overhead.py --repeats=5
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from absl import app, flags

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin_configs",
                          "quickstart.gin")

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Timed runs per variant (interleaved).")
flags.DEFINE_integer("warmup_steps", 200, "Untimed steps that trace every compiled function (rounded up "
                     "to the next evaluation step).")
flags.DEFINE_integer("steps", 2000, "Timed steps (the quickstart's length).")


def _timed_run(monitor, warmup_end: int) -> tuple[float, float]:
  """Seconds to train `--steps` steps after a warm-up to step `warmup_end`, in a fresh model_dir, and the
  seconds of those the run's Monitor (the builder's copy of `monitor`) counted."""
  import tensorflow as tf

  from trainer.loop import builder, driver
  from trainer.loop.settings import Trainer
  strategy = tf.distribute.get_strategy()
  with tempfile.TemporaryDirectory() as model_dir:
    run = builder.build(Trainer(monitor=monitor), strategy=strategy, model_dir=model_dir, is_chief=True)
    driver.train(run, builder.open_checkpointers(run), restored=None,
                 stop_conditions=[lambda: int(run.step.numpy()) >= warmup_end])
    run.monitor.seconds = 0.0
    started = time.perf_counter()
    driver.train(run, builder.open_checkpointers(run), restored=None)
    return time.perf_counter() - started, run.monitor.seconds


def _stopwatch(method):
  """Wraps a Monitor method to add its wall time to `self.seconds`."""
  def timed(self, *args):
    started = time.perf_counter()
    result = method(self, *args)
    self.seconds += time.perf_counter() - started
    return result
  return timed


def main(argv) -> None:
  del argv
  from trainer.config import parsing, registry
  from trainer.loop.settings import Trainer
  from trainer.metrics.monitor import Monitor

  class Timed(Monitor):
    """The default metric set, timing its own calls."""
    seconds = 0.0
    after_loop = _stopwatch(Monitor.after_loop)
    after_eval = _stopwatch(Monitor.after_eval)

  class Silent(Monitor):
    """The baseline: builds like `Monitor`, computes no metric (`train_eval_examples=0` too)."""

    def after_loop(self, previous_step, step):
      del previous_step, step
      return {}

  registry.register_all()
  parsing.parse([QUICKSTART], [])
  # The warm-up ends at an evaluation step: there the loop evaluates and the final evaluation is the
  # test split's alone, which traces the summary tag sets the timed part writes.
  eval_every = Trainer().eval_every
  warmup_end = -(-FLAGS.warmup_steps // eval_every) * eval_every
  parsing.parse([QUICKSTART], [f"Trainer.train_steps = {warmup_end + FLAGS.steps}"])
  times, fractions = {"default": [], "off": []}, []
  for _ in range(FLAGS.repeats):
    seconds, monitor_seconds = _timed_run(Timed(), warmup_end)
    times["default"].append(seconds)
    fractions.append(monitor_seconds / (seconds - monitor_seconds))
    times["off"].append(_timed_run(Silent(train_eval_examples=0), warmup_end)[0])
  for name, values in times.items():
    print(f"{name}: median {statistics.median(values):.3f}s, fastest {min(values):.3f}s over "
          f"{FLAGS.steps} steps; runs " + ", ".join(f"{v:.3f}" for v in values))
  for label, reduce in (("median", statistics.median), ("fastest", min)):
    overhead = reduce(times["default"]) / reduce(times["off"]) - 1
    print(f"A/B overhead of the default metric set ({label}): {overhead:+.1%}")
  print(f"time in Monitor calls / rest of the run: median {statistics.median(fractions):.1%}; runs "
        + ", ".join(f"{f:.1%}" for f in fractions))


if __name__ == "__main__":
  app.run(main)
