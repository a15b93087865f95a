"""The compiled parts of training: the replica step, the host loop, and evaluation.

Everything here runs inside `tf.function`. The host loop runs `num_steps` replica steps per call
(`tf.range` over a *tensor*, so a new count never retraces) because on TPUs and with small models a
Python round trip per step costs more than the step; metrics stay on device in replica-local
accumulators and are read once per loop.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from trainer.loop.accumulators import MetricSet
from trainer.metrics import classification
from trainer.regularization import distributed_update, mixing, sharpness_aware
from trainer.runtime import compat


class TrainProgram:
  """One optimizer step per replica: data loss + penalties inside the tape, update terms around the step.

  Loss scaling under distribution: gradients are *summed* across replicas, so the per-example loss is
  averaged over the global batch (`compute_average_loss`) and the penalty, which every replica
  computes in full, is divided by the replica count (`scale_regularization_loss`) exactly once.

  The step, in order: a batch transform (`Mixup`/`CutMix`, at most one) mixes this replica's batch;
  forward and backward at `w`; with `SAM`, the ascent to `w + e`, a second forward and backward there,
  and `w` restored; then the decoupled update terms before the optimizer step, the step, and the
  update terms after it. Among `update_terms` the batch transform and SAM are recognized by type.
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model: tf.keras.Model, optimizer,
               schedule, loss_fn: Callable, global_batch_size: int, loss_terms: Sequence,
               update_terms: Sequence, include_model_losses: bool, classification: bool,
               step: tf.Variable, seed: int, jit_compile: bool = False):
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.schedule = schedule
    self.loss_fn = loss_fn
    self.global_batch_size = global_batch_size
    self.loss_terms = tuple(loss_terms)
    self.mixing = _at_most_one(update_terms, mixing.BatchMixing, "batch transform (Mixup, CutMix)")
    self.sam = _at_most_one(update_terms, sharpness_aware.SAM, "SAM")
    self.update_terms = tuple(t for t in update_terms if t is not self.mixing and t is not self.sam)
    self.include_model_losses = include_model_losses
    self.classification = classification
    self.step = step
    # The stateless draws of the batch transform: (seed, step, replica), `seed` being `Trainer.seed`.
    self.seed = seed
    self.penalty_names = [term.name for term in self.loss_terms] + (
        ["model_losses"] if include_model_losses else [])
    names = ["train/loss", "train/data_loss", "penalty/total"] + [f"penalty/{n}" for n in self.penalty_names]
    names += ["train/accuracy"] if classification else []
    names += ["train/mixing_lambda"] if self.mixing is not None else []
    names += ["sharpness/sam_train", "sharpness/sam_train_perturbation_norm"] if self.sam is not None else []
    self.metrics = MetricSet(strategy, names)
    if self.sam is not None:
      trainable = {id(v): index for index, v in enumerate(model.trainable_variables)}
      self._sam_indices = [trainable[id(v)] for v in self.sam.variables]
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

  def _gradients(self, features: tf.Tensor, labels: tf.Tensor, mixed: mixing.Mixed | None = None):
    """Forward and backward on this replica's batch (no state changes, so XLA can always compile it)."""
    with tf.GradientTape() as tape:
      outputs = self.model(features, training=True)
      per_example = (self.loss_fn(labels, outputs) if mixed is None
                     else mixing.mixed_loss(self.loss_fn, labels, outputs, mixed))
      data_loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
      penalties = self.penalties()
      penalty_total = tf.add_n(list(penalties.values())) if penalties else tf.constant(0.0)
      loss = data_loss + tf.nn.scale_regularization_loss(penalty_total)
      scaled_loss = compat.scale_loss(self.optimizer, loss)  # mixed_float16: dynamic loss scaling
    gradients = compat.unscale_gradients(self.optimizer,
                                         tape.gradient(scaled_loss, self.model.trainable_variables))
    return gradients, outputs, per_example, penalties, penalty_total

  def _apply(self, gradients) -> None:
    """The update: decoupled terms on w_{t-1}, optimizer step (all-reduces under a strategy), then prox."""
    learning_rate = self.schedule(self.optimizer.iterations)
    if self.loss_scaling:  # A step the optimizer skips is skipped by decay and prox too (rate 0).
      learning_rate = tf.where(_all_replicas_finite(gradients), learning_rate, 0.0)
    base_learning_rate = self.schedule.base_learning_rate
    for term in self.update_terms:
      term.before_step(learning_rate, base_learning_rate)
    self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
    for term in self.update_terms:
      term.after_step(learning_rate, base_learning_rate)

  def _replica_step(self, features: tf.Tensor, labels: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """One step (`step` counts from 0); returns, per guarded quantity, on how many replicas it was not
    finite (all-reduced)."""
    mixed = None
    if self.mixing is not None:
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group
      mixed = self.mixing(features, labels, seed=self.seed, step=step, replica=replica)
      features = mixed.features
      self.metrics["train/mixing_lambda"].update(mixed.lam, 1.0)
    state = sharpness_aware.snapshot(self.model.non_trainable_variables) if self.sam is not None else None
    gradients, outputs, per_example, penalties, penalty_total = self._compute_gradients(
        features, labels, mixed)
    if self.sam is not None:
      gradients = self._sharpness_aware_gradients(features, labels, mixed, gradients, state,
                                                  tf.reduce_sum(per_example), penalty_total)
    self._apply(gradients)
    self._accumulate(labels, outputs, per_example, penalties, penalty_total, mixed)
    guarded = [tf.reduce_sum(per_example), *penalties.values()]
    if not self.loss_scaling:
      guarded.append(tf.linalg.global_norm(gradients))
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                          _nonfinite_flags(guarded))

  def _sharpness_aware_gradients(self, features, labels, mixed, gradients, state, data_sum, penalty_total):
    """SAM's gradient: at `w + e`, `e` the ascent step from `gradients` (docs: sharpness_aware.py).

    `state` is the model's non-trainable state from before the first pass; the second pass starts
    from it, and the state the first pass left is put back afterwards.
    """
    sam, replica_context = self.sam, tf.distribute.get_replica_context()
    ascent = [_dense(gradients[index], variable)
              for index, variable in zip(self._sam_indices, sam.variables)]
    if sam.perturbation == "global":
      ascent = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, ascent)
    non_trainable = self.model.non_trainable_variables
    after_first_pass = sharpness_aware.snapshot(non_trainable)
    sharpness_aware.restore(non_trainable, state)
    saved = sharpness_aware.snapshot(sam.variables)
    weights = [tf.cast(w, tf.float32) for w in saved]
    perturbation = sam.ascent(weights, ascent)
    distributed_update.assign_values(sam.variables, [w + e for w, e in zip(weights, perturbation)])
    perturbed_gradients, _, per_example, _, perturbed_penalty = self._compute_gradients(
        features, labels, mixed)
    distributed_update.assign_values(sam.variables, saved)  # bit for bit: the saved values, not w + e - e
    sharpness_aware.restore(non_trainable, after_first_pass)
    count = tf.cast(tf.shape(per_example)[0], tf.float32)
    increase = tf.reduce_sum(per_example) - data_sum + (perturbed_penalty - penalty_total) * count
    self.metrics["sharpness/sam_train"].update(increase, count)
    self.metrics["sharpness/sam_train_perturbation_norm"].update(tf.linalg.global_norm(perturbation), 1.0)
    return perturbed_gradients

  def _accumulate(self, labels, outputs, per_example, penalties, penalty_total, mixed) -> None:
    count = tf.cast(tf.shape(per_example)[0], tf.float32)
    data_sum = tf.reduce_sum(per_example)
    self.metrics["train/data_loss"].update(data_sum, count)
    self.metrics["train/loss"].update(data_sum + penalty_total * count, count)
    self.metrics["penalty/total"].update(penalty_total * count, count)
    for name, value in penalties.items():
      self.metrics[f"penalty/{name}"].update(value * count, count)
    if self.classification:
      correct = classification.correct_predictions(labels, outputs)
      if mixed is not None:  # credit each label by its weight in the mixture (as the Mixup reference does)
        correct = mixed.lam * correct + (1.0 - mixed.lam) * classification.correct_predictions(
            mixed.partner_labels, outputs)
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
               classification: bool):
    self.strategy = strategy
    self.model = model
    self.loss_fn = loss_fn
    self.classification = classification
    self.metrics = MetricSet(strategy, ["loss", "accuracy"] if classification else ["loss"])
    self._replica_step = tf.autograph.experimental.do_not_convert(self._replica_step)  # see TrainProgram
    self._loop = tf.function(self._loop_fn)

  def _replica_step(self, features, labels, weights) -> None:
    outputs = self.model(features, training=False)
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



def _at_most_one(update_terms: Sequence, kind: type, what: str):
  """The one term of `kind` among `update_terms`, None if there is none; ValueError if there are several."""
  found = [term for term in update_terms if isinstance(term, kind)]
  if len(found) > 1:
    raise ValueError(f"Trainer.regularizers: at most one {what} per run, got {[t.name for t in found]}")
  return found[0] if found else None


def _dense(gradient, variable) -> tf.Tensor:
  """A gradient as a dense float32 tensor: IndexedSlices (embeddings) densified, None (unused) as zeros."""
  if gradient is None:
    return tf.zeros(variable.shape, tf.float32)
  return tf.cast(tf.convert_to_tensor(gradient), tf.float32)


def _nonfinite_flags(values) -> tf.Tensor:
  return tf.stack([1.0 - tf.cast(tf.math.is_finite(tf.cast(v, tf.float32)), tf.float32) for v in values])


def _all_replicas_finite(gradients) -> tf.Tensor:
  """True when every replica's gradients are finite (an all-reduce, so all replicas agree)."""
  local = 1.0 - tf.cast(tf.math.is_finite(tf.linalg.global_norm(gradients)), tf.float32)
  return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local) == 0.0
