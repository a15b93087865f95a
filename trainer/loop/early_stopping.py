"""Early stopping on an evaluation metric, with the best model kept and exported.

`EarlyStopping` decides; its state (best value, best step, evaluations without improvement) lives in
variables that are checkpointed with the run, so a resumed run stops exactly where an uninterrupted
one would. The Trainer keeps the best weights in `model_dir/best/` (a checkpoint, a SavedModel for
inference, and `best.json` with the step and the metric).
"""

from __future__ import annotations

import dataclasses
import math

import gin
import tensorflow as tf

MODES = ("auto", "max", "min")


@dataclasses.dataclass(frozen=True)
class Decision:
  improved: bool
  stop: bool


@gin.configurable
class EarlyStopping(tf.Module):
  """Stops after `patience` evaluations in a row without an improvement larger than `min_delta`.

  Args:
    metric: an evaluated scalar, e.g. 'eval/accuracy' or 'eval/loss'.
    mode: 'max', 'min', or 'auto' (max for `eval/accuracy` and `train_eval/accuracy`, min otherwise).
    patience: evaluations without improvement before stopping (>= 1).
    min_delta: how much better than the best a value must be to count as an improvement (>= 0).
  """

  def __init__(self, *, metric: str = "eval/accuracy", mode: str = "auto", patience: int = 5,
               min_delta: float = 0.0):
    super().__init__(name="early_stopping")
    if mode not in MODES:
      raise ValueError(f"EarlyStopping.mode={mode!r} is not one of {MODES}")
    if int(patience) < 1:
      raise ValueError(f"EarlyStopping.patience must be >= 1, got {patience}")
    if not math.isfinite(min_delta) or min_delta < 0:
      raise ValueError(f"EarlyStopping.min_delta must be finite and >= 0, got {min_delta}")
    self.metric = metric
    # 'auto' maximizes accuracies; a gap (`gap/accuracy` = train - eval) is minimized like a loss.
    self.maximize = metric.endswith("accuracy") and not metric.startswith("gap/") if mode == "auto" else mode == "max"
    self.patience, self.min_delta = int(patience), float(min_delta)
    # The best value is stored as a score to maximize: the metric, or minus the metric.
    self.best_score = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_score")
    self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step")
    self.waited = tf.Variable(0, dtype=tf.int64, trainable=False, name="evaluations_without_improvement")

  def check_metric(self, available) -> None:
    """Raises before training when `metric` is not one of the `available` evaluated metrics."""
    if self.metric not in available:
      raise ValueError(f"EarlyStopping.metric={self.metric!r} is not an evaluated metric; available: "
                       f"{sorted(available)}")

  @property
  def best_value(self) -> float:
    score = float(self.best_score.numpy())
    return score if self.maximize else -score

  def update(self, step: int, scalars: dict[str, float]) -> Decision:
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
    return Decision(improved=False, stop=int(self.waited.numpy()) >= self.patience)
