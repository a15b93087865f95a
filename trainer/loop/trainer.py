"""`Trainer`: the gin-configurable experiment, built once; `trainer.controller` drives it.

A `Trainer` is built under the strategy scope by `trainer.main`. Everything that creates variables
or draws random numbers (model, data, optimizer) is bound as a *factory*, without parentheses
(`Trainer.model = @MLP`), so that Occam seeds first and builds it under the right scope.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import gin
import tensorflow as tf

from trainer.runtime import compat
from trainer.data import pipeline as input_pipeline
from trainer.loop import losses as losses_lib
from trainer.regularization import terms as regularizers_lib
from trainer.loop import schedules
from trainer.regularization import tfa_optimizers as tfa_support
from trainer.runtime.checkpointing import Checkpointer
from trainer.loop.controller import ON_NONFINITE, Controller
from trainer.loop.early_stopping import EarlyStopping
from trainer.metrics.monitor import Monitor
from trainer.loop.programs import EvalProgram, TrainProgram
from trainer.metrics.summaries import SummaryWriters


def _require_factory(name: str, value) -> Callable:
  if isinstance(value, (tf.keras.Model, tf.keras.optimizers.Optimizer)) or not callable(value):
    raise TypeError(f"Trainer.{name} must be a factory: bind it without parentheses, e.g. "
                    f"`Trainer.{name} = @{type(value).__name__}`, so that Occam seeds and builds it under "
                    f"the distribution strategy's scope (got an instance: {value!r})")
  return value


@gin.configurable(denylist=["strategy", "model_dir", "is_chief"])
class Trainer:
  """Trains `model` on `data` with `optimizer`, `regularizers` and an explicit GradientTape loop.

  Args (all gin-bindable):
    model: factory returning a `tf.keras.Model` (e.g. `@MLP`).
    data: factory returning `trainer.data.Splits` (e.g. `@digits`).
    optimizer: Keras optimizer class (e.g. `@Adam`); called with `learning_rate=<schedule>`.
    learning_rate: a float or a schedule (`@Constant()`, `@WarmupCosine()`, `@Piecewise()`).
    loss: per-example loss `(labels, outputs) -> [batch]` (`@softmax_cross_entropy`).
    regularizers: loss terms (`@L2()`, `@L1()`) and update terms (`@DecoupledWeightDecay()`,
      `@ProximalL1()`); layers' own `kernel_regularizer`s are added as `penalty/model_losses`.
    batch_size: global batch size (split evenly across replicas).
    eval_batch_size: global batch size for evaluation.
    train_steps: total optimizer steps (a resumed run continues up to this number).
    steps_per_loop: steps per `tf.function` call (the host loop); summaries land at loop ends.
    eval_every, checkpoint_every: in steps; both also happen at the last step.
    keep_checkpoints: how many checkpoints to keep.
    seed: seeds weights (via `tf.keras.utils.set_random_seed`) and the data order.
    mixed_precision: None (float32), 'mixed_bfloat16' (TPU, recent CPUs) or 'mixed_float16' (GPU; adds
      dynamic loss scaling). Losses, penalties and metrics are computed in float32 either way.
    jit_compile: compile the replica train step with XLA (what a TPU always does).
    early_stopping: `@EarlyStopping()` to stop when an eval metric stops improving; the best weights
      go to model_dir/best (checkpoint, SavedModel, best.json).
    on_nonfinite: what a non-finite loss, penalty or gradient does: 'stop' (an error naming the term
      and the step; the last good checkpoint stays untouched) or 'restore' (reload the last good
      checkpoint and scale the learning rate by `restore_lr_factor`, at most `max_restores` times).
    monitor: the loop-boundary metrics (`norms/*`, `sparsity/*`, `gap/*`, `sharpness/*`, HParams);
      None uses `Monitor()` with its gin bindings. See trainer/metrics.py and docs/METRICS.md.
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model_dir: str, is_chief: bool = True,
               model: Callable = gin.REQUIRED, data: Callable = gin.REQUIRED,
               optimizer: Callable = gin.REQUIRED, learning_rate=1e-3,
               loss: Callable = losses_lib.softmax_cross_entropy, regularizers: Sequence = (),
               batch_size: int = 64, eval_batch_size: int = 256, train_steps: int = 1000,
               steps_per_loop: int = 100, eval_every: int = 500, checkpoint_every: int = 500,
               keep_checkpoints: int = 3, seed: int = 0,
               mixed_precision: str | None = None, jit_compile: bool = False, monitor: Monitor | None = None,
               early_stopping: EarlyStopping | None = None, on_nonfinite: str = "stop",
               restore_lr_factor: float = 0.5, max_restores: int = 3):
    for name, value in (("train_steps", train_steps), ("steps_per_loop", steps_per_loop),
                        ("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
      if int(value) < 1:
        raise ValueError(f"Trainer.{name} must be >= 1, got {value}")
    if on_nonfinite not in ON_NONFINITE:
      raise ValueError(f"Trainer.on_nonfinite={on_nonfinite!r} is not one of {ON_NONFINITE}")
    if not 0 < restore_lr_factor <= 1:
      raise ValueError(f"Trainer.restore_lr_factor must be in (0, 1], got {restore_lr_factor}")
    self.strategy = strategy
    self.model_dir = model_dir
    self.on_nonfinite, self.restore_lr_factor, self.max_restores = on_nonfinite, restore_lr_factor, int(max_restores)
    self.early_stopping = early_stopping
    if early_stopping is not None:
      early_stopping.check_metric(EVALUATED_METRICS)
    self.train_steps, self.steps_per_loop = int(train_steps), int(steps_per_loop)
    self.eval_every, self.checkpoint_every = int(eval_every), int(checkpoint_every)
    self.batch_size, self.eval_batch_size, self.seed = int(batch_size), int(eval_batch_size), int(seed)
    replicas = strategy.num_replicas_in_sync
    input_pipeline.per_replica_batch_size(self.batch_size, replicas)
    input_pipeline.per_replica_batch_size(self.eval_batch_size, replicas)

    _set_precision_policy(mixed_precision)
    tf.keras.utils.set_random_seed(self.seed)
    self.splits = _require_factory("data", data)()
    classification = self.splits.num_classes is not None
    if self.batch_size > self.splits.train.num_examples:
      raise ValueError(f"Trainer.batch_size={self.batch_size} exceeds the {self.splits.train.num_examples} "
                       f"training examples of {self.splits.name}")
    with strategy.scope():
      self.model = _require_factory("model", model)()
      outputs = self.model(tf.zeros((1,) + self.splits.train.features.shape[1:], tf.float32), training=False)
      if classification and outputs.shape[-1] < self.splits.num_classes:
        raise ValueError(f"Trainer.model {self.model.name} has {outputs.shape[-1]} outputs but {self.splits.name} "
                         f"has {self.splits.num_classes} classes (e.g. MLP.num_outputs = {self.splits.num_classes})")
      self.schedule = schedules.Scaled(schedules.as_schedule(learning_rate))
      self.optimizer = _require_factory("optimizer", optimizer)(learning_rate=self.schedule)
      if mixed_precision == "mixed_float16":
        self.optimizer = compat.loss_scale_optimizer(self.optimizer)
      _refuse_builtin_weight_decay(self.optimizer)
      compat.build_optimizer(self.optimizer, self.model.trainable_variables)
      tfa_support.bind(self.optimizer, self.model, strategy)  # tfa: the selector feeds decay_var_list
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.terms = list(regularizers)
    for term in self.terms:
      term.bind(self.model)
    self.train_program = TrainProgram(
        strategy=strategy, model=self.model, optimizer=self.optimizer, schedule=self.schedule,
        loss_fn=loss, global_batch_size=self.batch_size,
        loss_terms=[t for t in self.terms if isinstance(t, regularizers_lib.LossTerm)],
        update_terms=[t for t in self.terms if isinstance(t, regularizers_lib.UpdateTerm)],
        include_model_losses=bool(self.model.losses), classification=classification, step=self.step,
        jit_compile=jit_compile)
    self.eval_program = EvalProgram(strategy=strategy, model=self.model, loss_fn=loss,
                                    classification=classification)
    self.monitor = monitor if monitor is not None else Monitor()
    self.monitor.bind(self)
    self.checkpointer = Checkpointer(os.path.join(model_dir, "checkpoints"), step=self.step,
                                     keep=keep_checkpoints, is_chief=is_chief, model=self.model,
                                     # Every model variable by position: Keras 3 does not reach the
                                     # dropout RNG state (SeedGenerator) through the model itself.
                                     model_variables=[compat.tf_variable(v) for v in self.model.variables],
                                     optimizer=self.optimizer, learning_rate_scale=self.schedule.scale,
                                     **self.monitor.checkpoint_trackables(), **self._early_stopping_state())
    self.best_checkpointer = Checkpointer(os.path.join(model_dir, "best"), step=self.step, keep=1,
                                          is_chief=is_chief, model=self.model)
    self.writers = SummaryWriters(model_dir, enabled=is_chief)
    self.is_chief = is_chief
    self._restored: str | None = None

  def _early_stopping_state(self) -> dict:
    return {"early_stopping": self.early_stopping} if self.early_stopping is not None else {}

  @property
  def restored(self) -> str | None:
    """The checkpoint this run resumed from (None for a fresh start)."""
    return self._restored

  def restore(self) -> str | None:
    """Restores the newest readable checkpoint in model_dir, if any (`ResumeError` if it does not fit)."""
    self._restored = self.checkpointer.restore_latest()
    return self._restored

  def run(self) -> dict[str, float]:
    """Trains from the restored step (call `restore` first) to `train_steps`; returns the final metrics."""
    return Controller(self).run()


def _refuse_builtin_weight_decay(optimizer) -> None:
  """Refuses a Keras optimizer's own `weight_decay`: it would bypass the selector, unlogged.

  Keras applies it to every variable, biases and normalization parameters included, and no
  `optimizer/weight_decay` or HParams entry would show it. tfa's decoupled optimizers are exempt:
  Occam feeds their decay from the selector (trainer/tfa_support.py).
  """
  inner = getattr(optimizer, "inner_optimizer", optimizer)  # under mixed_float16 loss scaling
  decay = getattr(inner, "weight_decay", None)
  if tfa_support.is_decoupled(inner) or decay is None or (isinstance(decay, (int, float)) and decay == 0):
    return
  name = type(inner).__name__
  raise ValueError(
      f"Trainer.optimizer {name} has its own weight_decay={decay}, which Keras applies to every variable "
      f"(biases and normalization parameters too), outside Occam's variable selector and unlogged. Use "
      f"`Trainer.regularizers = [@DecoupledWeightDecay()]` with `DecoupledWeightDecay.rate = {decay}` (its "
      f"default convention 'lr_coupled' is Keras' update), or bind `{name}.weight_decay = 0`.")


# The metrics every evaluation reports (accuracies for classification only): what early stopping can watch.
EVALUATED_METRICS = ("eval/loss", "eval/accuracy", "train_eval/loss", "train_eval/accuracy", "gap/loss",
                     "gap/accuracy")
PRECISION_POLICIES = (None, "float32", "mixed_bfloat16", "mixed_float16")


def _set_precision_policy(policy: str | None) -> None:
  """Sets Keras' global dtype policy (always, so an earlier run in this process cannot leak into this one)."""
  if policy not in PRECISION_POLICIES:
    raise ValueError(f"Trainer.mixed_precision={policy!r} is not one of {PRECISION_POLICIES}")
  tf.keras.mixed_precision.set_global_policy(policy or "float32")
