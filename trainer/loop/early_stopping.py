"""Early stopping on an evaluation metric, and the eval action that keeps the best model.

`EarlyStopping` is the gin-bound spec (which metric, which direction, how patient); the builder
creates its state, `EarlyStoppingState` (best value, best step, evaluations without improvement), in
variables under the strategy's scope that are checkpointed with the run, so a resumed run stops
exactly where an uninterrupted one would. The state decides. `KeepBest` is the eval action that feeds
it every evaluation and keeps the best weights in `model_dir/best/` (a checkpoint and `best.json` with
the step and the metric); at the end of the run, `KeepBest.finish` evaluates the test split with those
weights (`best/test/*`, the number papers report) and exports them once as a SavedModel.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Mapping, Sequence

import gin
import tensorflow as tf
from absl import logging

from trainer.common import checks, files
from trainer.metrics import tags
from trainer.runtime.checkpointing import Checkpointer
from trainer.runtime.export import export_saved_model

MODES = ("auto", "max", "min")
BEST_PREFIX = "best/"  # best/test/accuracy: the test metrics of the best-validation weights


@dataclasses.dataclass(frozen=True)
class Decision:
  improved: bool
  stop: bool


@gin.configurable
class EarlyStopping:
  """Stops after `patience` evaluations in a row without an improvement larger than `min_delta`.

  Args:
    metric: an evaluated scalar, e.g. 'eval/accuracy' or 'eval/loss'.
    mode: 'max', 'min', or 'auto' (the direction the tag registry gives the metric: max for
      accuracies, min for losses and gaps).
    patience: evaluations without improvement before stopping (>= 1).
    min_delta: how much better than the best a value must be to count as an improvement (>= 0).
  """

  # How patient, not what is watched: a resumed run may change these (see trainer/config/guard.py).
  RESUME_SAFE = ("patience", "min_delta")

  def __init__(self, *, metric: str = "eval/accuracy", mode: str = "auto", patience: int = 5,
               min_delta: float = 0.0):
    if mode not in MODES:
      raise ValueError(f"EarlyStopping.mode={mode!r} is not one of {MODES}")
    self.metric = metric
    self.maximize = _maximize(metric) if mode == "auto" else mode == "max"
    self.patience = checks.integer("EarlyStopping", "patience", patience, minimum=1)
    self.min_delta = checks.nonnegative("EarlyStopping", "min_delta", min_delta)

  def check_metric(self, available: Sequence[str]) -> None:
    """Raises before training when `metric` is not one of the `available` evaluated metrics."""
    if self.metric not in available:
      raise ValueError(f"EarlyStopping.metric={self.metric!r} is not an evaluated metric; available: "
                       f"{sorted(available)}")

  def create_state(self) -> EarlyStoppingState:
    """The state of one run (variables: call it under the strategy's scope)."""
    return EarlyStoppingState(self)


class EarlyStoppingState(tf.Module):
  """The checkpointed state of `EarlyStopping` in one run, and its decisions."""

  def __init__(self, spec: EarlyStopping):
    super().__init__(name="early_stopping")
    self.metric, self.maximize = spec.metric, spec.maximize
    self.patience, self.min_delta = spec.patience, spec.min_delta
    # The best value is stored as a score to maximize: the metric, or minus the metric.
    self.best_score = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_score")
    self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step")
    self.waited = tf.Variable(0, dtype=tf.int64, trainable=False, name="evaluations_without_improvement")

  @property
  def best_value(self) -> float:
    score = float(self.best_score.numpy())
    return score if self.maximize else -score

  @property
  def stopped(self) -> bool:
    """Whether the run has already waited `patience` evaluations (also after a resume)."""
    return int(self.waited.numpy()) >= self.patience

  def update(self, step: int, scalars: Mapping[str, float]) -> Decision:
    """Takes one evaluation's metrics; says whether it is the new best and whether to stop."""
    if self.metric not in scalars:
      raise ValueError(f"EarlyStopping.metric={self.metric!r} is not an evaluated metric; "
                       f"available: {sorted(k for k in scalars if '/' in k)}")
    score = scalars[self.metric] if self.maximize else -scalars[self.metric]
    if score > float(self.best_score.numpy()) + self.min_delta:
      self.best_score.assign(score)
      self.best_step.assign(step)
      self.waited.assign(0)
      return Decision(improved=True, stop=False)
    self.waited.assign_add(1)
    return Decision(improved=False, stop=self.stopped)


def _maximize(metric: str) -> bool:
  """The registry's direction for `metric` (minimize what is not registered as higher-is-better)."""
  try:
    return bool(tags.find(metric).higher_is_better)
  except tags.UnknownTagError:
    return False


class KeepBest:
  """Eval action: feeds `EarlyStopping` and keeps the best weights (checkpoint, best.json); see `finish`.

  Every worker takes part in the best checkpoint (a collective under multi-worker); only the chief
  writes best.json and exports the SavedModel.
  """

  def __init__(self, stopper: EarlyStoppingState, *, checkpointer: Checkpointer, model: tf.keras.Model,
               feature_shape: Sequence[int], is_chief: bool):
    self._stopper, self._checkpointer, self._model = stopper, checkpointer, model
    self._feature_shape, self._is_chief = tuple(feature_shape), is_chief

  def __call__(self, step: int, scalars: Mapping[str, float]) -> None:
    stopper = self._stopper
    decision = stopper.update(step, scalars)
    if decision.improved:
      self._save(step, scalars[stopper.metric])
    if decision.stop:
      logging.info("early stopping at step %d: %s did not improve by more than %g in %d evaluations "
                   "(best %.4g at step %d)", step, stopper.metric, stopper.min_delta, stopper.patience,
                   stopper.best_value, int(stopper.best_step.numpy()))

  def _save(self, step: int, value: float) -> None:
    self._checkpointer.save(step)
    if self._is_chief:
      files.write_json(os.path.join(self._checkpointer.directory, "best.json"),
                       {"step": step, "metric": self._stopper.metric, "value": value})

  def finish(self, evaluate: Callable[[Sequence[str]], dict[str, float]]) -> dict[str, float]:
    """At the end of a run: `best/test/*` of the best weights, which are also exported once.

    Loads the best checkpoint's weights into the model, evaluates the test split with
    `evaluate(['test'])`, exports the SavedModel (`best/saved_model`, chief only), and puts the
    last weights back, so the model a caller gets is still the trained one. {} if no evaluation
    has been kept yet.
    """
    path = tf.train.latest_checkpoint(self._checkpointer.directory)
    if path is None:
      return {}
    last = [tf.identity(variable) for variable in self._model.variables]
    tf.train.Checkpoint(model=self._model).restore(path).expect_partial()
    try:
      scalars = evaluate(["test"])
      if self._is_chief:
        export_saved_model(self._model, os.path.join(self._checkpointer.directory, "saved_model"),
                           self._feature_shape)
    finally:
      for variable, value in zip(self._model.variables, last):
        variable.assign(value)
    return {f"{BEST_PREFIX}{name}": value for name, value in scalars.items()}
