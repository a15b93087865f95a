"""The compiled parts of training: the replica step, the host loop, and evaluation.

Everything here runs inside `tf.function`. The host loop runs `num_steps` replica steps per call
(`tf.range` over a *tensor*, so a new count never retraces) because on TPUs and with small models a
Python round trip per step costs more than the step; metrics stay on device in replica-local
accumulators and are read once per loop.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from trainer.loop.accumulators import MetricSet
from trainer.metrics import classification
from trainer.regularization import terms as terms_lib
from trainer.runtime import compat


class TrainProgram:
  """One optimizer step per replica: data loss + penalties inside the tape, update terms around the step.

  Loss scaling under distribution: gradients are *summed* across replicas, so the per-example loss is
  averaged over the global batch (`compute_average_loss`) and the penalty, which every replica
  computes in full, is divided by the replica count (`scale_regularization_loss`) exactly once.

  The step calls each role of `terms` (`trainer.regularization.terms.Roles`) at its place: the batch
  transform (at most one) transforms this replica's batch; the gradient estimator (at most one; else
  one pass) takes the gradient from forward and backward passes, the loss terms' penalties inside the
  tape; then the update terms before the optimizer step, the step, the update terms after it, and
  last the weight averages (the states the builder created for them).
  The program knows the roles' protocols, not the terms: what a term reports, it declares.

  `on_device` is what the step does first to the features as they crossed from the host (e.g. uint8
  images normalized on the device, `ImagePreprocessing.on_device`); identity by default.
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model: tf.keras.Model, optimizer,
               schedule, loss_fn: Callable, global_batch_size: int, terms: terms_lib.Roles,
               include_model_losses: bool, classification: bool, step: tf.Variable, seed: int,
               jit_compile: bool = False, averages=(), on_device: Callable = tf.identity):
    self.strategy = strategy
    self.on_device = on_device
    self.model = model
    self.optimizer = optimizer
    self.schedule = schedule
    self.loss_fn = loss_fn
    self.global_batch_size = global_batch_size
    self.loss_terms = terms.loss_terms
    self.update_terms = terms.update_terms
    self.batch_transform = terms.batch_transform
    self.gradient_estimator = terms.gradient_estimator
    # The weight averages' states (`averaging.AveragedWeights`), updated after the whole update.
    self.averages = tuple(averages)
    self.include_model_losses = include_model_losses
    self.classification = classification
    self.step = step
    # The stateless draws of the batch transform: (seed, step, replica), `seed` being `Trainer.seed`.
    self.seed = seed
    self.penalty_names = [term.name for term in self.loss_terms] + (
        ["model_losses"] if include_model_losses else [])
    names = ["train/loss", "train/data_loss", "penalty/total"] + [f"penalty/{n}" for n in self.penalty_names]
    names += ["train/accuracy"] if classification else []
    self.metrics = MetricSet(strategy, names + list(terms.train_tags))
    # What the non-finite guard watches, in the order of `_replica_step`'s flags. Dynamic loss scaling
    # (mixed_float16) expects overflowing gradients now and then and skips those steps itself, so
    # with it the guard watches the losses only, and the update terms skip the same steps.
    self.loss_scaling = compat.is_loss_scale_optimizer(optimizer)
    self.guarded = ["data loss"] + [f"penalty {name}" for name in self.penalty_names] + (
        [] if self.loss_scaling else ["gradients"])
    with strategy.scope():
      self.nonfinite = tf.Variable(tf.zeros([len(self.guarded)]), trainable=False, name="nonfinite_replicas")
    # XLA compiles the replica step; the host loop around it stays a plain tf.function. An XLA cluster
    # runs on one device, so with several replicas the cross-replica update (all-reduce, optimizer,
    # decay, prox) stays outside it and XLA compiles forward and backward. (On a TPU the whole
    # replica function is compiled by TPUStrategy regardless.)
    # Only the host loop's `for _ in tf.range(...)` needs AutoGraph; converting the replica step and
    # everything it calls from source cost ~1.3 s of start-up (measured) and changes nothing.
    whole_step = jit_compile and strategy.num_replicas_in_sync == 1
    self._compute_gradients = (tf.function(self._gradients, jit_compile=True, autograph=False)
                               if jit_compile and not whole_step else self._gradients)
    step = tf.autograph.experimental.do_not_convert(self._replica_step)
    self._step = tf.function(step, jit_compile=True, autograph=False) if whole_step else step
    self.loop = tf.function(self._loop)

  def update_term_penalties(self) -> dict[str, float]:
    """`penalty/<term>` of each update term: what it adds to the objective (not in `train/loss`).

    Read at the loop's end from the current weights, in cross-replica context (a few reductions).
    """
    base = self.schedule.base_learning_rate
    penalties = {f"penalty/{term.name}": term.objective_penalty(base) for term in self.update_terms}
    return {tag: float(value) for tag, value in penalties.items() if value is not None}

  def penalties(self) -> dict[str, tf.Tensor]:
    """Each loss term's unscaled penalty (and `model_losses`), from the variables' current values."""
    penalties = {term.name: tf.cast(term.penalty(), tf.float32) for term in self.loss_terms}
    if self.include_model_losses:
      penalties["model_losses"] = tf.add_n([tf.cast(loss, tf.float32) for loss in self.model.losses])
    return penalties

  def _gradients(self, features: tf.Tensor, labels: tf.Tensor, batch=None) -> terms_lib.GradientPass:
    """Forward and backward on this replica's batch (no state changes, so XLA can always compile it).

    `batch` is the batch transform's result for this step, None without a batch transform.
    """
    with tf.GradientTape() as tape:
      outputs = self.model(features, training=True)
      per_example = (self.loss_fn(labels, outputs) if batch is None
                     else self.batch_transform.loss(self.loss_fn, labels, outputs, batch))
      data_loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
      penalties = self.penalties()
      penalty_total = tf.add_n(list(penalties.values())) if penalties else tf.constant(0.0)
      loss = data_loss + tf.nn.scale_regularization_loss(penalty_total)
      scaled_loss = compat.scale_loss(self.optimizer, loss)  # mixed_float16: dynamic loss scaling
    gradients = compat.unscale_gradients(self.optimizer,
                                         tape.gradient(scaled_loss, self.model.trainable_variables))
    return terms_lib.GradientPass(gradients, outputs, per_example, penalties, penalty_total)

  def _apply(self, gradients) -> tf.Tensor:
    """The update: decoupled terms on w_{t-1}, optimizer step (all-reduces under a strategy), then prox.

    Returns whether the step was applied: False only for a step dynamic loss scaling skipped.
    """
    learning_rate = self.schedule(self.optimizer.iterations)
    applied = _all_replicas_finite(gradients) if self.loss_scaling else tf.constant(True)
    if self.loss_scaling:  # A step the optimizer skips is skipped by decay and prox too (rate 0).
      learning_rate = tf.where(applied, learning_rate, 0.0)
    base_learning_rate = self.schedule.base_learning_rate
    for term in self.update_terms:
      term.before_step(learning_rate, base_learning_rate)
    self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
    for term in self.update_terms:
      term.after_step(learning_rate, base_learning_rate)
    return applied

  def _replica_step(self, features: tf.Tensor, labels: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """One step (`step` counts from 0); returns, per guarded quantity, on how many replicas it was not
    finite (all-reduced)."""
    features = self.on_device(features)
    batch = None
    if self.batch_transform is not None:
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group
      batch = self.batch_transform(features, labels, seed=self.seed, step=step, replica=replica)
      features = batch.features
      self.batch_transform.record(self.metrics, batch)

    def compute() -> terms_lib.GradientPass:
      return self._compute_gradients(features, labels, batch)

    taken = compute() if self.gradient_estimator is None else self.gradient_estimator.estimate(
        compute, self.metrics)
    applied = self._apply(taken.gradients)
    for average in self.averages:  # and the weight averages skip what the optimizer skipped
      average.update(step, applied=applied)
    self._accumulate(labels, taken, batch)
    guarded = [tf.reduce_sum(taken.per_example), *taken.penalties.values()]
    if not self.loss_scaling:
      guarded.append(tf.linalg.global_norm(taken.gradients))
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                          _nonfinite_flags(guarded))

  def _accumulate(self, labels, taken: terms_lib.GradientPass, batch) -> None:
    outputs, per_example, penalties, penalty_total = (taken.outputs, taken.per_example, taken.penalties,
                                                      taken.penalty_total)
    count = tf.cast(tf.shape(per_example)[0], tf.float32)
    data_sum = tf.reduce_sum(per_example)
    self.metrics["train/data_loss"].update(data_sum, count)
    self.metrics["train/loss"].update(data_sum + penalty_total * count, count)
    self.metrics["penalty/total"].update(penalty_total * count, count)
    for name, value in penalties.items():
      self.metrics[f"penalty/{name}"].update(value * count, count)
    if self.classification:
      correct = (classification.correct_predictions(labels, outputs) if batch is None else
                 self.batch_transform.correct(classification.correct_predictions, labels, outputs, batch))
      self.metrics["train/accuracy"].update(tf.reduce_sum(correct), count)

  def _loop(self, iterator, num_steps: tf.Tensor) -> tf.Tensor:
    """Runs `num_steps` steps; returns the index of the first non-finite step in this loop, or -1.

    The check stays on the device: each step's flags are all-reduced inside the replica step, and the
    first bad step and its flags are carried through the loop, with no host round trip or
    data-dependent exit per step (so TPU steps stay pipelined). Steps after a bad one still run; the
    host never saves their result. That is what lets the error name the exact step and term.
    """
    first_bad = tf.constant(-1, tf.int32)
    flags_at_first_bad = tf.zeros([len(self.guarded)])
    start = tf.cast(self.step.read_value(), tf.int64)
    for index in tf.range(num_steps):
      features, labels = next(iterator)
      step = start + tf.cast(index, tf.int64)
      flags = self.strategy.experimental_local_results(
          self.strategy.run(self._step, args=(features, labels, step)))[0]
      is_first = tf.logical_and(first_bad < 0, tf.reduce_any(flags > 0))
      first_bad = tf.where(is_first, index, first_bad)
      flags_at_first_bad = tf.where(is_first, flags, flags_at_first_bad)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    self.nonfinite.assign(flags_at_first_bad)
    return first_bad

  def nonfinite_report(self) -> list[str]:
    """The guarded quantities that went non-finite in the last loop (empty when all were finite)."""
    return [name for name, count in zip(self.guarded, self.nonfinite.numpy()) if count > 0]


class EvalProgram:
  """Weighted loss (and accuracy) over a finite distributed dataset, in inference mode."""

  def __init__(self, *, strategy: tf.distribute.Strategy, model: tf.keras.Model, loss_fn: Callable,
               classification: bool, on_device: Callable = tf.identity):
    self.strategy = strategy
    self.on_device = on_device  # as TrainProgram's
    self.model = model
    self.loss_fn = loss_fn
    self.classification = classification
    self.metrics = MetricSet(strategy, ["loss", "accuracy"] if classification else ["loss"])
    self._replica_step = tf.autograph.experimental.do_not_convert(self._replica_step)  # see TrainProgram
    self._loop = tf.function(self._loop_fn)

  def _replica_step(self, features, labels, weights) -> None:
    outputs = self.model(self.on_device(features), training=False)
    total_weight = tf.reduce_sum(weights)
    self.metrics["loss"].update(tf.reduce_sum(self.loss_fn(labels, outputs) * weights), total_weight)
    if self.classification:
      correct = classification.correct_predictions(labels, outputs)
      self.metrics["accuracy"].update(tf.reduce_sum(correct * weights), total_weight)

  def _loop_fn(self, dataset) -> None:
    for batch in dataset:
      self.strategy.run(self._replica_step, args=batch)

  def evaluate(self, dataset) -> dict[str, float]:
    """Metrics over every example of `dataset` (a distributed dataset of padded, weighted batches)."""
    self.metrics.reset()
    self._loop(dataset)
    return self.metrics.results()



def _nonfinite_flags(values) -> tf.Tensor:
  return tf.stack([1.0 - tf.cast(tf.math.is_finite(tf.cast(v, tf.float32)), tf.float32) for v in values])


def _all_replicas_finite(gradients) -> tf.Tensor:
  """True when every replica's gradients are finite (an all-reduce, so all replicas agree)."""
  local = 1.0 - tf.cast(tf.math.is_finite(tf.linalg.global_norm(gradients)), tf.float32)
  return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local) == 0.0
