"""Occam measured through its public seams, exactly as `trainer.train` builds and runs it.

`register_all()`, the gin bindings parsed by `trainer.config.parsing.parse`, `Trainer()` under the
strategy's scope, `builder.build`, and per host loop `runners.TrainRunner(run).train(steps_per_loop)`:
what the Controller calls (reset the metric accumulators, one compiled `train_program.loop` call,
read the metrics, the learning rate and the `Monitor`'s per-loop statistics). Evaluation,
checkpoints and summary writing happen at their own intervals and are not timed.
"""

from __future__ import annotations

import tempfile
from typing import Sequence

import gin
import tensorflow as tf

from trainer.benchmarks.timing import Variant, repeated
from trainer.config import parsing, registry
from trainer.loop import builder, runners
from trainer.loop.trainer import Trainer
from trainer.metrics.monitor import Monitor


@gin.configurable
class MonitorOff(Monitor):
  """A `Monitor` that computes no per-loop statistics: the baseline of the Monitor's cost.

  No `Monitor` setting turns the per-loop statistics off (the probe batch has at least one example),
  so "the cheapest Monitor" by gin settings would still run a forward and backward pass per loop.
  """

  def after_loop(self, previous_step: int, step: int) -> dict[str, float]:
    del previous_step, step
    return {}


def build_run(bindings: Sequence[str], strategy: tf.distribute.Strategy, model_dir: str) -> builder.Run:
  """The `Run` that `bindings` alone describe, built under `strategy` as `trainer.train` builds it."""
  registry.register_all()
  parsing.parse([], bindings)
  with strategy.scope():
    settings = Trainer()
  return builder.build(settings, strategy=strategy, model_dir=model_dir, is_chief=True)


def occam_variant(label: str, bindings: Sequence[str], *, steps_per_loop: int, loops: int, model_dir: str,
                  strategy: tf.distribute.Strategy | None = None) -> Variant:
  """A freshly built run (in a new directory under `model_dir`), timed over `loops` host loops."""
  runner = runners.TrainRunner(build_run(bindings, strategy or tf.distribute.get_strategy(),
                                         tempfile.mkdtemp(dir=model_dir)))

  def run_loop() -> None:
    output = runner.train(steps_per_loop)
    if output.nonfinite:  # A non-finite loop returns before the Monitor: not what training times.
      raise FloatingPointError(f"{label}: non-finite {', '.join(output.nonfinite)} at step "
                               f"{output.first_bad_step}")

  return Variant(label, repeated(run_loop, loops), steps_per_loop * loops)
