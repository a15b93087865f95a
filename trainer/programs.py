"""The compiled parts of training: the replica step, the host loop, and evaluation.

Everything here runs inside `tf.function`. The host loop runs `num_steps` replica steps per call
(`tf.range` over a *tensor*, so a new count never retraces) because on TPUs and with small models a
Python round trip per step costs more than the step; metrics stay on device in replica-local
accumulators and are read once per loop.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from trainer import losses as losses_lib
from trainer.accumulators import MetricSet


class TrainProgram:
  """One optimizer step per replica: data loss + penalties inside the tape, update terms around the step.

  Loss scaling under distribution: gradients are *summed* across replicas, so the per-example loss is
  averaged over the global batch (`compute_average_loss`) and the penalty, which every replica
  computes in full, is divided by the replica count (`scale_regularization_loss`) exactly once.
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model: tf.keras.Model, optimizer,
               schedule, loss_fn: Callable, global_batch_size: int, loss_terms: Sequence,
               update_terms: Sequence, include_model_losses: bool, classification: bool,
               step: tf.Variable):
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.schedule = schedule
    self.loss_fn = loss_fn
    self.global_batch_size = global_batch_size
    self.loss_terms = tuple(loss_terms)
    self.update_terms = tuple(update_terms)
    self.include_model_losses = include_model_losses
    self.classification = classification
    self.step = step
    self.penalty_names = [term.name for term in self.loss_terms] + (
        ["model_losses"] if include_model_losses else [])
    names = ["train/loss", "train/data_loss", "penalty/total"] + [f"penalty/{n}" for n in self.penalty_names]
    self.metrics = MetricSet(strategy, names + (["train/accuracy"] if classification else []))
    self.loop = tf.function(self._loop)

  def _penalties(self) -> dict[str, tf.Tensor]:
    penalties = {term.name: tf.cast(term.penalty(), tf.float32) for term in self.loss_terms}
    if self.include_model_losses:
      penalties["model_losses"] = tf.add_n([tf.cast(l, tf.float32) for l in self.model.losses])
    return penalties

  def _replica_step(self, features: tf.Tensor, labels: tf.Tensor) -> None:
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      outputs = self.model(features, training=True)
      per_example = self.loss_fn(labels, outputs)
      data_loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
      penalties = self._penalties()
      penalty_total = tf.add_n(list(penalties.values())) if penalties else tf.constant(0.0)
      loss = data_loss + tf.nn.scale_regularization_loss(penalty_total)
    gradients = tape.gradient(loss, variables)
    learning_rate = self.schedule(self.optimizer.iterations)
    base_learning_rate = self.schedule.base_learning_rate
    for term in self.update_terms:
      term.before_step(learning_rate, base_learning_rate)
    self.optimizer.apply_gradients(zip(gradients, variables))
    for term in self.update_terms:
      term.after_step(learning_rate, base_learning_rate)
    self._accumulate(labels, outputs, per_example, penalties, penalty_total)

  def _accumulate(self, labels, outputs, per_example, penalties, penalty_total) -> None:
    count = tf.cast(tf.shape(per_example)[0], tf.float32)
    data_sum = tf.reduce_sum(per_example)
    self.metrics["train/data_loss"].update(data_sum, count)
    self.metrics["train/loss"].update(data_sum + penalty_total * count, count)
    self.metrics["penalty/total"].update(penalty_total * count, count)
    for name, value in penalties.items():
      self.metrics[f"penalty/{name}"].update(value * count, count)
    if self.classification:
      self.metrics["train/accuracy"].update(
          tf.reduce_sum(losses_lib.correct_predictions(labels, outputs)), count)

  def _loop(self, iterator, num_steps: tf.Tensor) -> None:
    for _ in tf.range(num_steps):
      self.strategy.run(self._replica_step, args=next(iterator))
    self.step.assign_add(tf.cast(num_steps, tf.int64))


class EvalProgram:
  """Weighted loss (and accuracy) over a finite distributed dataset, in inference mode."""

  def __init__(self, *, strategy: tf.distribute.Strategy, model: tf.keras.Model, loss_fn: Callable,
               classification: bool):
    self.strategy = strategy
    self.model = model
    self.loss_fn = loss_fn
    self.classification = classification
    self.metrics = MetricSet(strategy, ["loss", "accuracy"] if classification else ["loss"])
    self._loop = tf.function(self._loop_fn)

  def _replica_step(self, features, labels, weights) -> None:
    outputs = self.model(features, training=False)
    total_weight = tf.reduce_sum(weights)
    self.metrics["loss"].update(tf.reduce_sum(self.loss_fn(labels, outputs) * weights), total_weight)
    if self.classification:
      correct = losses_lib.correct_predictions(labels, outputs)
      self.metrics["accuracy"].update(tf.reduce_sum(correct * weights), total_weight)

  def _loop_fn(self, dataset) -> None:
    for batch in dataset:
      self.strategy.run(self._replica_step, args=batch)

  def evaluate(self, dataset) -> dict[str, float]:
    """Metrics over every example of `dataset` (a distributed dataset of padded, weighted batches)."""
    self.metrics.reset()
    self._loop(dataset)
    return self.metrics.results()
