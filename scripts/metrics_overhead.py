"""Measures the cost of the default `Monitor` metric set on the quickstart (docs/METRICS.md).

Runs the quickstart in process, alternating a Trainer with `Monitor()` (defaults) and one whose
monitor computes nothing, `--repeats` times each. Every Trainer first runs `--warmup_steps` so that
all `tf.function`s are traced, then the timed part trains `--steps` more steps (loops, evaluations,
checkpoints as configured). Prints the median and the fastest wall time of each variant, the A/B
overhead by both, and (less sensitive to a busy machine) the time spent inside the monitor's calls
divided by the rest of the same run.

  python scripts/metrics_overhead.py --repeats=5
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Timed runs per variant (interleaved).")
flags.DEFINE_integer("warmup_steps", 200, "Untimed steps that trace every compiled function.")
flags.DEFINE_integer("steps", 2000, "Timed steps (the quickstart's length).")


def _timed_run(monitor) -> float:
  """Seconds to train `--steps` steps after the warm-up, in a fresh model_dir."""
  import tensorflow as tf
  from trainer.loop.trainer import Trainer
  strategy = tf.distribute.get_strategy()
  with strategy.scope():
    trainer = Trainer(strategy=strategy, model_dir=tempfile.mkdtemp(), monitor=monitor)
  trainer.train_steps = FLAGS.warmup_steps
  trainer.run()
  trainer.train_steps = FLAGS.warmup_steps + FLAGS.steps
  monitor.seconds = 0.0
  started = time.perf_counter()
  trainer.run()
  return time.perf_counter() - started


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
  import models  # noqa: F401
  from tests.helpers import QUICKSTART
  from trainer.config import parsing as config  # noqa: F401
  from trainer import data
  from trainer.config import registry
  from trainer.regularization import terms as regularizers
  from trainer.metrics.monitor import Monitor
  from trainer.loop.trainer import Trainer  # noqa: F401  (registers Trainer with gin)

  class Timed(Monitor):
    """The default metric set, timing its own calls."""
    seconds = 0.0
    after_loop = _stopwatch(Monitor.after_loop)
    after_eval = _stopwatch(Monitor.after_eval)

  class Silent(Monitor):
    """Builds like `Monitor` but computes no metric (the baseline)."""

    def after_loop(self, previous_step, step, writers):
      return {}

  config.parse([QUICKSTART], [])
  times, fractions = {"default": [], "off": []}, []
  for _ in range(FLAGS.repeats):
    timed = Timed()
    times["default"].append(_timed_run(timed))
    fractions.append(timed.seconds / (times["default"][-1] - timed.seconds))
    times["off"].append(_timed_run(Silent(train_eval_examples=0)))
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
