"""The two small interfaces the Controller drives: train n steps -> outputs; evaluate -> metrics.

As in Orbit's `AbstractTrainer`/`AbstractEvaluator`, the Controller never touches a model, an
optimizer or a dataset: it asks a `TrainRunner` for `num_steps` more steps and an `EvalRunner` for
the metrics of some splits. Each runner owns its input stream and reads its results to the host
once per call.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Sequence

import tensorflow as tf

from trainer.data import pipeline
from trainer.loop.builder import Run


@dataclasses.dataclass(frozen=True)
class TrainOutput:
  """What one host loop of training produced.

  Attributes:
    step: the step counter after the loop.
    scalars: the loop's scalars by tag (empty when a step was not finite).
    histograms: tensors to summarize as histograms by tag (empty unless due).
    nonfinite: the guarded quantities that went non-finite (empty when all were finite).
    first_bad_step: the step (1-based, like the counter) of the first non-finite step, else None.
  """

  step: int
  scalars: Mapping[str, float]
  histograms: Mapping[str, tf.Tensor] = dataclasses.field(default_factory=dict)
  nonfinite: tuple[str, ...] = ()
  first_bad_step: int | None = None


class TrainRunner:
  """Runs the compiled host loop of a built `Run` on its training stream.

  The data order is a pure function of (seed, step) (see `trainer.data.pipeline`), so the stream is
  (re)created at whatever step the counter holds: at the start, and after a restore moved it back.
  """

  def __init__(self, run: Run):
    self._run = run
    self._iterator = None
    self._iterator_step: int | None = None

  @property
  def step(self) -> int:
    return int(self._run.step.numpy())

  def _input(self, step: int):
    if self._iterator_step != step:
      run = self._run
      settings = run.settings
      self._iterator = iter(run.strategy.distribute_datasets_from_function(
          lambda context: pipeline.train_dataset(run.splits.train, global_batch_size=settings.batch_size,
                                                 seed=settings.seed, start_step=step, input_context=context,
                                                 preprocessing=run.preprocessing)))
    return self._iterator

  def train(self, num_steps: int) -> TrainOutput:
    """Runs `num_steps` steps in one compiled call and reads the loop's results."""
    run, program = self._run, self._run.train_program
    start = self.step
    iterator = self._input(start)
    program.metrics.reset()
    started = time.perf_counter()
    first_bad = int(program.loop(iterator, tf.constant(num_steps, tf.int32)))
    seconds = time.perf_counter() - started
    step = start + num_steps
    self._iterator_step = step
    if first_bad >= 0:
      return TrainOutput(step=step, scalars={}, nonfinite=tuple(program.nonfinite_report()),
                         first_bad_step=start + first_bad + 1)
    scalars = program.metrics.results()
    learning_rate = run.schedule(step - 1)
    scalars["optimizer/learning_rate"] = float(learning_rate)
    decays = [float(term.effective_decay(learning_rate, run.schedule.base_learning_rate))
              for term in run.update_terms]
    if any(decays):
      scalars["optimizer/weight_decay"] = sum(decays)
    scalars.update(program.update_term_penalties())
    scalars["perf/steps_per_sec"] = num_steps / seconds
    scalars["perf/examples_per_sec"] = num_steps * run.settings.batch_size / seconds
    scalars.update(run.monitor.after_loop(start, step))
    return TrainOutput(step=step, scalars=scalars, histograms=run.monitor.histograms(start, step))

  def clear_nonfinite_flags(self) -> None:
    """Forgets the last loop's non-finite flags (after a restore undid that loop)."""
    flags = self._run.train_program.nonfinite
    flags.assign(tf.zeros_like(flags))


class EvalRunner:
  """Evaluates a built `Run` on its validation ('eval') and test ('test') splits, in inference mode."""

  def __init__(self, run: Run):
    self._run = run
    self._datasets: dict[str, tf.distribute.DistributedDataset] = {}

  def _dataset(self, name: str) -> tf.distribute.DistributedDataset:
    if name not in self._datasets:
      run = self._run
      split = {"eval": run.splits.validation, "test": run.splits.test}[name]
      self._datasets[name] = run.strategy.distribute_datasets_from_function(
          lambda context: pipeline.eval_dataset(split, global_batch_size=run.settings.eval_batch_size,
                                                input_context=context, preprocessing=run.preprocessing))
    return self._datasets[name]

  def evaluate(self, names: Sequence[str]) -> dict[str, float]:
    """`<name>/<metric>` for each split name; with 'eval', also the monitor's `train_eval/*` and `gap/*`."""
    scalars = {}
    for name in names:
      results = self._run.eval_program.evaluate(self._dataset(name))
      scalars.update({f"{name}/{metric}": value for metric, value in results.items()})
    if "eval" in names:
      scalars.update(self._run.monitor.after_eval(scalars))
    return scalars
