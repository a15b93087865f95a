"""`Trainer`: the gin-configurable experiment, and the loop that decides when to train, evaluate,
checkpoint and summarize.

A `Trainer` is built under the strategy scope by `trainer.main`. Everything that creates variables
or draws random numbers (model, data, optimizer) is bound as a *factory*, without parentheses
(`Trainer.model = @MLP`), so that Occam seeds first and builds it under the right scope.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import gin
import tensorflow as tf
from absl import logging

from trainer import compat, config, input_pipeline
from trainer import losses as losses_lib
from trainer import regularizers as regularizers_lib
from trainer import schedules
from trainer.checkpointing import Checkpointer
from trainer.programs import EvalProgram, TrainProgram
from trainer.summaries import SummaryWriters


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
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model_dir: str, is_chief: bool = True,
               model: Callable = gin.REQUIRED, data: Callable = gin.REQUIRED,
               optimizer: Callable = gin.REQUIRED, learning_rate=1e-3,
               loss: Callable = losses_lib.softmax_cross_entropy, regularizers: Sequence = (),
               batch_size: int = 64, eval_batch_size: int = 256, train_steps: int = 1000,
               steps_per_loop: int = 100, eval_every: int = 500, checkpoint_every: int = 500,
               keep_checkpoints: int = 3, seed: int = 0):
    for name, value in (("train_steps", train_steps), ("steps_per_loop", steps_per_loop),
                        ("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
      if int(value) < 1:
        raise ValueError(f"Trainer.{name} must be >= 1, got {value}")
    self.strategy = strategy
    self.model_dir = model_dir
    self.train_steps, self.steps_per_loop = int(train_steps), int(steps_per_loop)
    self.eval_every, self.checkpoint_every = int(eval_every), int(checkpoint_every)
    self.batch_size, self.eval_batch_size, self.seed = int(batch_size), int(eval_batch_size), int(seed)
    replicas = strategy.num_replicas_in_sync
    input_pipeline.per_replica_batch_size(self.batch_size, replicas)
    input_pipeline.per_replica_batch_size(self.eval_batch_size, replicas)

    tf.keras.utils.set_random_seed(self.seed)
    self.splits = _require_factory("data", data)()
    classification = self.splits.num_classes is not None
    with strategy.scope():
      self.model = _require_factory("model", model)()
      self.model(tf.zeros((1,) + self.splits.train.features.shape[1:], tf.float32), training=False)
      self.schedule = schedules.as_schedule(learning_rate)
      self.optimizer = _require_factory("optimizer", optimizer)(learning_rate=self.schedule)
      compat.build_optimizer(self.optimizer, self.model.trainable_variables)
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
        include_model_losses=bool(self.model.losses), classification=classification, step=self.step)
    self.eval_program = EvalProgram(strategy=strategy, model=self.model, loss_fn=loss,
                                    classification=classification)
    self.checkpointer = Checkpointer(os.path.join(model_dir, "checkpoints"), step=self.step,
                                     keep=keep_checkpoints, model=self.model, optimizer=self.optimizer)
    self.writers = SummaryWriters(model_dir, enabled=is_chief)
    self._restored: str | None = None

  def _eval_datasets(self) -> dict[str, tf.distribute.DistributedDataset]:
    def make(split):
      return self.strategy.distribute_datasets_from_function(
          lambda context: input_pipeline.eval_dataset(split, global_batch_size=self.eval_batch_size,
                                                      input_context=context))
    return {"eval": make(self.splits.validation), "test": make(self.splits.test)}

  def _train_iterator(self, start_step: int):
    dataset = self.strategy.distribute_datasets_from_function(
        lambda context: input_pipeline.train_dataset(self.splits.train, global_batch_size=self.batch_size,
                                                     seed=self.seed, start_step=start_step,
                                                     input_context=context))
    return iter(dataset)

  def _describe_start(self, restored: str | None, start: int) -> None:
    logging.info("data: %s", self.splits.description)
    logging.info("model: %s, %d trainable parameters", self.model.name,
                 sum(int(tf.size(v)) for v in self.model.trainable_variables))
    for term in self.terms:
      logging.info("regularizer %s: %s", term.name, term.describe())
      self.writers.write_text("train", start, f"regularizers/{term.name}", term.describe())
    overlap = regularizers_lib.overlap_warning(self.terms, self.model)
    if overlap:
      logging.warning("%s", overlap)
    logging.info("resumed from %s at step %d" if restored else "starting from scratch%s at step %d",
                 restored or "", start)

  def _next_boundary(self, step: int) -> int:
    """The next step at which the host must act: loop end, evaluation, checkpoint or the last step."""
    candidates = [step + self.steps_per_loop, self.train_steps,
                  (step // self.eval_every + 1) * self.eval_every,
                  (step // self.checkpoint_every + 1) * self.checkpoint_every]
    return min(candidates)

  def _loop_scalars(self, step: int, num_steps: int, seconds: float) -> dict[str, float]:
    scalars = self.train_program.metrics.results()
    learning_rate = self.schedule(step - 1)
    scalars["optimizer/learning_rate"] = float(learning_rate)
    decays = [float(t.effective_decay(learning_rate, self.schedule.base_learning_rate))
              for t in self.terms if isinstance(t, regularizers_lib.UpdateTerm)]
    if any(decays):
      scalars["optimizer/weight_decay"] = sum(decays)
    scalars["perf/steps_per_sec"] = num_steps / seconds
    scalars["perf/examples_per_sec"] = num_steps * self.batch_size / seconds
    return scalars

  def restore(self) -> str | None:
    """Restores the newest checkpoint in model_dir, if any (`ResumeError` if it does not fit)."""
    self._restored = self.checkpointer.restore_latest()
    return self._restored

  def run(self) -> dict[str, float]:
    """Trains from the restored step (call `restore` first) to `train_steps`; returns the final metrics."""
    step = int(self.step.numpy())
    self._describe_start(self._restored, step)
    eval_datasets = self._eval_datasets()
    iterator = self._train_iterator(step)
    final: dict[str, float] = {}
    first_loop = True
    while step < self.train_steps:
      num_steps = self._next_boundary(step) - step
      self.train_program.metrics.reset()
      started = time.perf_counter()
      self.train_program.loop(iterator, tf.constant(num_steps, tf.int32))
      scalars = self._loop_scalars(step + num_steps, num_steps, time.perf_counter() - started)
      step = int(self.step.numpy())
      self.writers.write_scalars("train", step, scalars)
      if first_loop:
        self.writers.write_text("train", step, "config/operative_gin",
                                config.write_operative_config(self.model_dir))
        first_loop = False
      if step % self.eval_every == 0 or step == self.train_steps:
        scalars.update(self._evaluate(step, eval_datasets, ["eval"]))
      if step % self.checkpoint_every == 0 or step == self.train_steps:
        self.checkpointer.save(step)
      _log_loop(step, self.train_steps, scalars)
      final = scalars
    # The last loop already evaluated the validation split; a run resumed at its end has not.
    final.update(self._evaluate(step, eval_datasets, ["test"] if final else ["eval", "test"]))
    self.writers.flush()
    return final

  def _evaluate(self, step: int, datasets, names: Sequence[str]) -> dict[str, float]:
    scalars = {}
    for name in names:
      results = self.eval_program.evaluate(datasets[name])
      scalars.update({f"{name}/{metric}": value for metric, value in results.items()})
    self.writers.write_scalars("eval", step, scalars)
    return scalars


def _log_loop(step: int, train_steps: int, scalars: dict[str, float]) -> None:
  """One greppable line per loop: `train | step: 500/1000 | loss: 0.31 | ... | steps/sec: 41.2 | eta: 12s`."""
  keys = ["train/loss", "train/data_loss", "train/accuracy", "eval/loss", "eval/accuracy"]
  parts = [f"step: {step}/{train_steps}"]
  parts += [f"{key.replace('train/', '')}: {scalars[key]:.4g}" for key in keys if key in scalars]
  rate = scalars["perf/steps_per_sec"]
  parts += [f"steps/sec: {rate:.1f}", f"eta: {(train_steps - step) / rate:.0f}s"]
  logging.info("train | %s", " | ".join(parts))
