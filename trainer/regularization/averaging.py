"""Weight averaging: an exponential moving average (`EMA`) and stochastic weight averaging (`SWA`).

Both keep an average of the weights the run passes through and leave the trajectory itself alone:
the raw weights train exactly as without them. The run evaluates the average beside the raw weights
(`eval/*` into its own TensorBoard run, `model_dir/eval_<name>/`), reports its test metrics at the
end (`<name>/test/*` in results.json) and exports it (`model_dir/<name>/saved_model`).

**Spec and state.** `EMA` and `SWA` are the gin-bound specs: plain values. The builder creates each
one's state, `AveragedWeights`, under the strategy's scope (`create_state`): float32 variables
mirrored like the model's, checkpointed with the run (so a resumed run continues the same average,
bit for bit), and updated once per step in the train step, after the optimizer step and every update
term, from this replica's (identical) copy of the weights. A step the optimizer skips (dynamic loss
scaling under `mixed_float16`: a non-finite gradient) is skipped by the averages too: it changes
neither an average nor its count, and an SWA snapshot due at that step is not taken. The step
counters (SWA's schedule, EMA's warmup `t`) count it all the same, as the run's step does.

**EMA** (`decay`): after each step, `average <- average - (average - w) * (1 - decay)`, i.e.
`decay * average + (1 - decay) * w`, starting from the initial weights. That is timm's `ModelEmaV2`
and `tfa.optimizers.MovingAverage` (`dynamic_decay=False`), without a bias correction. `warmup=True`
is tfa's `dynamic_decay=True`: `decay_t = min(decay, (1 + t) / (10 + t))` with `t` the steps before
this one, which lets the average forget the initial weights quickly. What is averaged:
`statistics='averaged'` (the default) also averages the models' BatchNorm moving statistics, as
timm's `ModelEmaV2` averages every buffer; `statistics='raw'` averages the trainable variables only
and evaluates them with the raw model's current statistics, as tfa's `assign_average_vars` does.

**SWA** (`start_step`, `every`): the running mean of the weights after steps `start_step`,
`start_step + every`, ...: `average <- (average * n + w) / (n + 1)`, `n` the snapshots so far. The
step counts from 1 (the counter TensorBoard shows); `tfa.optimizers.SWA(start_averaging=s,
average_period=p)` counts iterations before the step and equals `SWA(start_step=s + 1, every=p)`.
Only the trainable variables are averaged (tfa, and torch's `AveragedModel` by default); a model
with BatchNorm gets its statistics recomputed for the average before it is evaluated or exported,
as `torch.optim.swa_utils.update_bn` does: the statistics are set to the mean over one pass of
training batches (`statistics_batches`, default one epoch in the run's order from step 0) of what
each layer stores for one batch in training mode, its moving statistics at momentum 0. Until the
first snapshot there is no average to evaluate.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import gin
import tensorflow as tf

from trainer.common import checks
from trainer.regularization import distributed_update, terms
from trainer.runtime import compat

STATISTICS = ("averaged", "raw")


@gin.configurable
class EMA(terms.WeightAverage):
  """Exponential moving average of the weights, `decay * average + (1 - decay) * w` after each step.

  Args:
    decay: in [0, 1); timm/DeiT use 0.99996 per step at batch 1024, tfa defaults to 0.99.
    warmup: tfa's `dynamic_decay`: `min(decay, (1 + t) / (10 + t))` at the step after `t` steps.
    statistics: 'averaged' (BatchNorm moving statistics averaged too, timm `ModelEmaV2`) or 'raw'
      (trainable variables only; evaluated with the raw model's statistics, tfa `MovingAverage`).
    name: the term's name: its run `eval_<name>/`, its export `<name>/saved_model` (a plain directory
      name, none of the run's own: `WeightAverage.RESERVED_NAMES`).
  """

  def __init__(self, decay: float = 0.999, *, warmup: bool = False, statistics: str = "averaged",
               name: str = "ema"):
    super().__init__(name=name)
    self.decay = checks.nonnegative(name, "decay", decay)
    if self.decay >= 1:
      raise ValueError(f"{name}: decay must be < 1, got {decay}")
    self.warmup = bool(warmup)
    if statistics not in STATISTICS:
      raise ValueError(f"{name}: unknown statistics {statistics!r}; valid values are {list(STATISTICS)}")
    self.statistics = statistics

  def create_state(self, model, *, statistics_batches=None) -> AveragedWeights:
    del statistics_batches  # the statistics are averaged (or raw), never recomputed
    averaged = list(model.trainable_variables)
    if self.statistics == "averaged":
      # BatchNorm's moving statistics; not the integer state of dropout's random generator (Keras 3).
      averaged += [v for v in model.non_trainable_variables if compat.tf_variable(v).dtype.is_floating]
    return AveragedWeights(self, averaged, model=model)

  def rule(self, average: tf.Tensor, weights: tf.Tensor, count: tf.Tensor,
           step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(new average, whether it took this step's weights) after the step `step` (0-based)."""
    del count
    decay = tf.constant(self.decay, tf.float32)
    if self.warmup:
      steps_before = tf.cast(step, tf.float32)
      decay = tf.minimum(decay, (1.0 + steps_before) / (10.0 + steps_before))
    return average - (average - weights) * (1.0 - decay), tf.constant(True)

  def _settings(self) -> str:
    return f"decay={self.decay:g}, warmup={self.warmup}, statistics={self.statistics!r}"

  def _hparams(self) -> dict:
    return {"decay": self.decay, "warmup": self.warmup, "statistics": self.statistics}


@gin.configurable
class SWA(terms.WeightAverage):
  """Stochastic weight averaging (Izmailov et al. 2018): the mean of the weights after steps
  `start_step`, `start_step + every`, ... (steps count from 1).

  Args:
    start_step: the first step whose weights are averaged (>= 1).
    every: steps between two snapshots (>= 1; Izmailov et al. take one per epoch).
    statistics_batches: training batches for the BatchNorm statistics of the average (>= 1); None
      (the default) is one epoch of the training split. Unused for a model without BatchNorm.
    name: the term's name: its run `eval_<name>/`, its export `<name>/saved_model` (a plain directory
      name, none of the run's own: `WeightAverage.RESERVED_NAMES`).
  """

  recomputes_statistics = True

  def __init__(self, start_step: int = 1, every: int = 1, *, statistics_batches: int | None = None,
               name: str = "swa"):
    super().__init__(name=name)
    self.start_step = checks.integer(name, "start_step", start_step, minimum=1)
    self.every = checks.integer(name, "every", every, minimum=1)
    self.statistics_batches = (None if statistics_batches is None else
                               checks.integer(name, "statistics_batches", statistics_batches, minimum=1))

  def create_state(self, model, *, statistics_batches=None) -> AveragedWeights:
    return AveragedWeights(self, list(model.trainable_variables), model=model,
                           statistics_batches=statistics_batches)

  def rule(self, average: tf.Tensor, weights: tf.Tensor, count: tf.Tensor,
           step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(new average, whether it took this step's weights) after the step `step` (0-based)."""
    after = tf.cast(step, tf.int32) + 1  # the step counter after this step
    due = tf.logical_and(after >= self.start_step, tf.math.floormod(after - self.start_step, self.every) == 0)
    return tf.where(due, (average * count + weights) / (count + 1.0), average), due

  def _settings(self) -> str:
    return f"start_step={self.start_step}, every={self.every}"

  def _hparams(self) -> dict:
    return {"start_step": self.start_step, "every": self.every}


class AveragedWeights:
  """The state of one weight average in one run: float32 copies of the averaged variables and a count.

  `count` is the number of weights averaged so far (EMA: steps; SWA: snapshots), float32 like the
  averages. Created under the strategy's scope (mirrored like the model's variables); every replica
  computes the same update from its copy of the weights. `trackable` is what the checkpoint holds.
  """

  def __init__(self, spec: terms.WeightAverage, sources: list, *, model,
               statistics_batches: Callable[[], Iterable] | None = None):
    self.spec, self._model, self._statistics_batches = spec, model, statistics_batches
    self._strategy = tf.distribute.get_strategy()  # the run's: the state is created in its scope
    self._sources = sources
    self.trackable = tf.Module(name=f"average_{spec.name}")
    self.trackable.averages = [
        tf.Variable(tf.cast(compat.tf_variable(v).read_value(), tf.float32), trainable=False,
                    name=f"average_{index}") for index, v in enumerate(sources)]
    self.trackable.count = tf.Variable(0.0, trainable=False, name="count")
    self.averages, self.count = list(self.trackable.averages), self.trackable.count
    self._forward = None  # the statistics pass, compiled once

  @property
  def model(self) -> tf.keras.Model:
    """The model whose weights are averaged."""
    return self._model

  @property
  def ready(self) -> bool:
    """Whether the average holds at least one set of weights (SWA has none before its first snapshot)."""
    return float(self.count.numpy()) > 0

  def update(self, step: tf.Tensor, *, applied: tf.Tensor | bool = True) -> None:
    """After the step `step` (0-based), in replica context: the spec's rule on every averaged variable.

    `applied` is False for a step the optimizer skipped (dynamic loss scaling under mixed_float16, a
    non-finite gradient on some replica): the averages and the count stay as they are, bit for bit.
    """
    count = self.count.read_value()
    sources = [tf.cast(compat.tf_variable(source).read_value(), tf.float32) for source in self._sources]
    statistics = [i for i, source in enumerate(self._sources) if not source.trainable]
    for i, mean in zip(statistics, _replica_mean([sources[i] for i in statistics])):
      sources[i] = mean
    new_values, took = [], tf.constant(False)
    for average, weights in zip(self.averages, sources):
      previous = average.read_value()
      value, took = self.spec.rule(previous, weights, count, step)
      new_values.append(tf.where(applied, value, previous))
    new_count = count + tf.cast(tf.logical_and(took, applied), tf.float32)
    distributed_update.assign_values(self.averages + [self.count], new_values + [new_count])

  @contextlib.contextmanager
  def swapped_in(self) -> Iterator[None]:
    """Puts the average into the model (with SWA, recomputed BatchNorm statistics) and every model
    variable back afterwards, bit for bit (the dropout RNG state and the statistics included).

    Every replica's copy is saved and put back on its own: under a MirroredStrategy the copies of a
    BatchNorm layer's moving statistics differ (each replica updates them from its own batches), and
    reading a variable in cross-replica context gives one value (Keras 3: the first replica's; Keras 2:
    their mean), which assigned back would overwrite every replica's own statistics.
    """
    copies = [self._strategy.experimental_local_results(compat.tf_variable(v)) for v in self._model.variables]
    saved = [[tf.identity(copy.read_value()) for copy in variable] for variable in copies]
    try:
      for source, average in zip(self._sources, self.averages):
        compat.tf_variable(source).assign(tf.cast(average, source.dtype))
      if self._statistics_batches is not None:
        self._recompute_statistics()
      yield
    finally:
      for variable, values in zip(copies, saved):
        for copy, value in zip(variable, values):
          copy.assign(value)

  def _recompute_statistics(self) -> None:
    """BatchNorm statistics of the current weights: the mean over the statistics batches of each layer's
    one-batch statistics in training mode (torch's `update_bn`)."""
    layers = batch_norm_layers(self._model)
    statistics = [compat.tf_variable(v) for layer in layers
                  for v in (layer.moving_mean, layer.moving_variance)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
      layer.momentum = 0.0  # the moving statistics become this batch's
    try:
      if self._forward is None:
        self._forward = tf.function(lambda features: self._model(features, training=True), autograph=False)
      totals, batches = [tf.zeros_like(v, tf.float32) for v in statistics], 0
      for features, _ in self._statistics_batches():
        self._forward(features)
        totals = [total + tf.cast(v, tf.float32) for total, v in zip(totals, statistics)]
        batches += 1
    finally:
      for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    for variable, total in zip(statistics, totals):
      variable.assign(tf.cast(total / batches, variable.dtype))


def batch_norm_layers(model) -> list:
  """The model's BatchNormalization layers (whose moving statistics SWA recomputes)."""
  return [layer for layer in compat.flatten_layers(model)
          if isinstance(layer, tf.keras.layers.BatchNormalization)]


def _replica_mean(values: list[tf.Tensor]) -> list[tf.Tensor]:
  """The mean of each of `values` over the replicas (in replica context, one batched all-reduce): the
  per-replica BatchNorm statistics averaged the same on every replica, so every copy of their average
  (the one evaluated and checkpointed is the first replica's) holds the same value."""
  context = tf.distribute.get_replica_context()
  if not values or context is None or context.num_replicas_in_sync == 1:
    return values
  return context.all_reduce(tf.distribute.ReduceOp.MEAN, values)
