"""The two small interfaces the Controller drives: train n steps -> outputs; evaluate -> metrics.

As in Orbit's `AbstractTrainer`/`AbstractEvaluator`, the Controller never touches a model, an
optimizer or a dataset: it asks a `TrainRunner` for `num_steps` more steps and an `EvalRunner` for
the metrics of some splits. Each runner owns its input stream and reads its results to the host
once per call.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import tensorflow as tf

from trainer.loop import schedules
from trainer.loop.builder import Run
from trainer.loop.programs import EvalProgram, TrainProgram
from trainer.metrics.monitor import MonitorState
from trainer.runtime import preemption

# With a stop request to watch (a preemption signal), about the longest stretch of training between the
# signal and the stop (split over `LoopCalls.calls_to_stop` calls): a Cloud TPU or spot VM gets about
# 30 s between its notice and the kill.
SECONDS_PER_CALL = 10.0


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
  """Runs the compiled host loop of a `TrainProgram` on its training stream.

  It gets what it uses, as Orbit's `StandardTrainer` owns its dataset: the program, the input function
  (`train_input(step)`: the distributed stream from `step` on), the schedule (`optimizer/*`), the
  Monitor (its loop-end metrics) and the global batch size (`perf/examples_per_sec`). The data order
  is a pure function of (seed, step) (see `trainer.data.pipeline`), so the stream is (re)created at
  whatever step the counter holds: at the start, and after a restore moved it back.
  """

  def __init__(self, *, program: TrainProgram, train_input: Callable[[int], Iterator],
               schedule: schedules.Scaled, monitor: MonitorState, global_batch_size: int):
    self._program, self._train_input = program, train_input
    self._schedule, self._monitor, self._global_batch_size = schedule, monitor, global_batch_size
    self._iterator = None
    self._iterator_step: int | None = None
    self._steps_per_call = 1  # with `calls`: the first call (which traces) is one step

  @property
  def step(self) -> int:
    return int(self._program.step.numpy())

  def _input(self, step: int):
    if self._iterator_step != step:
      self._iterator = self._train_input(step)
    return self._iterator

  def train(self, num_steps: int, calls: preemption.LoopCalls | None = None) -> TrainOutput:
    """Runs `num_steps` steps in compiled calls and reads the loop's results once.

    Without `calls` the loop is one call. With them (a preemption may come), the loop is split into
    calls of about `SECONDS_PER_CALL` each (sized from the previous call's rate, agreed between workers;
    the first is one step, which also traces): the loop ends after a call during which a signal came,
    or before the call at which the workers agreed to stop (`preemption.StopAgreed`), so that a
    preemption notice waits for at most one call, not a whole loop. The steps, their data and their
    metrics are the same however the loop is split.
    """
    program = self._program
    start = self.step
    iterator = self._input(start)
    program.metrics.reset()
    started = time.perf_counter()
    done, first_bad = 0, -1
    while done < num_steps and first_bad < 0:
      steps = num_steps - done if calls is None else min(num_steps - done, self._steps_per_call)
      call_started = time.perf_counter()
      # A loop's first call always runs: a loop of no steps would have nothing to report.
      run = calls.run if calls is not None and done else (lambda function, *args: function(*args))
      try:
        bad = int(run(program.loop, iterator, tf.constant(steps, tf.int32)))
      except preemption.StopAgreed:
        break
      first_bad = done + bad if bad >= 0 else -1
      done += steps
      if calls is not None:
        seconds_per_step = max(time.perf_counter() - call_started, 1e-6) / steps
        budget = SECONDS_PER_CALL / calls.calls_to_stop
        self._steps_per_call = calls.steps_per_call(max(1, int(budget / seconds_per_step)))
        if calls.stop_requested():
          break
    seconds = time.perf_counter() - started
    num_steps, step = done, start + done
    self._iterator_step = step
    if first_bad >= 0:
      return TrainOutput(step=step, scalars={}, nonfinite=tuple(program.nonfinite_report()),
                         first_bad_step=start + first_bad + 1)
    scalars = program.metrics.results()
    learning_rate = self._schedule(step - 1)
    scalars["optimizer/learning_rate"] = float(learning_rate)
    decays = [float(term.effective_decay(learning_rate, self._schedule.base_learning_rate))
              for term in program.update_terms]
    if any(decays):
      scalars["optimizer/weight_decay"] = sum(decays)
    scalars.update(program.update_term_penalties())
    scalars["perf/steps_per_sec"] = num_steps / seconds
    scalars["perf/examples_per_sec"] = num_steps * self._global_batch_size / seconds
    scalars.update(self._monitor.after_loop(start, step))
    return TrainOutput(step=step, scalars=scalars, histograms=self._monitor.histograms(start, step))

  def clear_nonfinite_flags(self) -> None:
    """Forgets the last loop's non-finite flags (after a restore undid that loop)."""
    flags = self._program.nonfinite
    flags.assign(tf.zeros_like(flags))


class EvalRunner:
  """Evaluates an `EvalProgram` on named splits ('eval': validation, 'test'), in inference mode.

  `inputs` maps each name to a function returning one padded distributed pass over the split (made
  once, then reused); with a Monitor, an evaluation of 'eval' also gives its `train_eval/*` and `gap/*`.
  """

  def __init__(self, *, program: EvalProgram, inputs: Mapping[str, Callable[[], Iterable]],
               monitor: MonitorState | None = None):
    self._program, self._inputs, self._monitor = program, inputs, monitor
    self._datasets: dict[str, Iterable] = {}

  def _dataset(self, name: str) -> Iterable:
    if name not in self._datasets:
      self._datasets[name] = self._inputs[name]()
    return self._datasets[name]

  def evaluate(self, names: Sequence[str]) -> dict[str, float]:
    """`<name>/<metric>` for each split name; with 'eval', also the monitor's `train_eval/*` and `gap/*`."""
    scalars = {}
    for name in names:
      results = self._program.evaluate(self._dataset(name))
      scalars.update({f"{name}/{metric}": value for metric, value in results.items()})
    if "eval" in names and self._monitor is not None:
      scalars.update(self._monitor.after_eval(scalars))
    return scalars


def train_runner(run: Run) -> TrainRunner:
  """The `TrainRunner` of a built run: its train program, input, schedule, Monitor and batch size."""
  return TrainRunner(program=run.train_program, train_input=run.train_input, schedule=run.schedule,
                     monitor=run.monitor, global_batch_size=run.config.batch_size)


def eval_runner(run: Run) -> EvalRunner:
  """The `EvalRunner` of a built run: its eval program, the validation and test inputs, its Monitor."""
  return EvalRunner(program=run.eval_program, inputs=run.eval_inputs, monitor=run.monitor)
