"""Loop-boundary metrics: weight norms, sparsity, gradient norm, flatness, generalization gap.

The `Monitor` computes everything at the host loop's boundaries, never per step: the per-loop
statistics (`norms/*`, `sparsity/*`) in ONE compiled call whose results come back to the host as
one vector, the sharpness probes in another compiled call when due, and the train-subset evaluation
in a third one after each validation evaluation. The calls run in cross-replica context, where a
mirrored variable reads as its (identical) primary copy, so nothing is all-reduced.

The train subset and the probe batch are small, fixed, and held as constants, so each is one
forward pass on one device. (Measured on the quickstart: going through the Trainer's `EvalProgram`
instead costs ~35 ms per evaluation, almost all of it creating the tf.data iterator, which alone
would be ~15% of the training time; the constant batch costs ~1 ms.)

The tags and their formulas are documented in docs/METRICS.md.
"""

from __future__ import annotations

from typing import Callable, Mapping

import gin
import numpy as np
import tensorflow as tf

from trainer.common import checks
from trainer.metrics import classification, sharpness, weight_stats
from trainer.regularization import selectors
from trainer.runtime import compat


@gin.configurable
class Monitor:
  """Generalization, penalty-side and flatness metrics for TensorBoard (bind `Trainer.monitor`).

  Args (all gin-bindable; the defaults are the "default metric set" whose overhead docs/METRICS.md
  states):
    near_zero_threshold: `sparsity/near_zero_fraction` counts regularized weights with
      |w| < this (default 1e-3).
    train_eval_examples: the first N examples of the train split, evaluated as one batch in
      inference mode at every validation evaluation for `train_eval/*` and `gap/*` (default 512;
      0 = off).
    sharpness_examples: the first N train examples form the fixed probe batch of `norms/grad_l2`
      and the sharpness probes (default 256).
    sharpness_every: steps between sharpness probes (default 0 = off). Probes run at the first loop
      end at or after each multiple.
    hessian_iterations: maximum power iterations (HVPs) for the top eigenvalue (default 20).
    hessian_tolerance: power iteration stops when successive estimates differ by at most this,
      relative (default 1e-3).
    sam_rho: radius of the SAM perturbation (default 0.05).
    histogram_every: steps between histograms of the regularized weights (default 0 = off).
  """

  # Metrics only observe the run: a resumed run may change any of them (see trainer/config/guard.py).
  RESUME_SAFE = ("*",)

  def __init__(self, *, near_zero_threshold: float = 1e-3, train_eval_examples: int = 512,
               sharpness_examples: int = 256, sharpness_every: int = 0,
               hessian_iterations: int = 20, hessian_tolerance: float = 1e-3,
               sam_rho: float = 0.05, histogram_every: int = 0):
    owner = "Monitor"
    self.near_zero_threshold = checks.nonnegative(owner, "near_zero_threshold", near_zero_threshold)
    self.train_eval_examples = checks.integer(owner, "train_eval_examples", train_eval_examples, minimum=0)
    self.sharpness_examples = checks.integer(owner, "sharpness_examples", sharpness_examples, minimum=1)
    self.sharpness_every = checks.integer(owner, "sharpness_every", sharpness_every, minimum=0)
    self.histogram_every = checks.integer(owner, "histogram_every", histogram_every, minimum=0)
    self.hessian_iterations = checks.integer(owner, "hessian_iterations", hessian_iterations, minimum=1)
    self.hessian_tolerance = checks.nonnegative(owner, "hessian_tolerance", hessian_tolerance)
    self.sam_rho = checks.nonnegative(owner, "sam_rho", sam_rho)

  @property
  def train_examples_needed(self) -> int:
    """How many of the first training examples `bind` wants (the sharpness probe and the train subset)."""
    return max(self.sharpness_examples, self.train_eval_examples)

  def bind(self, *, strategy: tf.distribute.Strategy, model, terms,
           train_examples: tuple[np.ndarray, np.ndarray], loss_fn: Callable,
           penalties: Callable[[], dict[str, tf.Tensor]], classification: bool, seed: int) -> None:
    """Attaches to a built run's parts: its model, terms, first training examples, loss and penalties.

    `train_examples` are (features, labels) of the first `train_examples_needed` training examples
    as the model sees them in evaluation.
    Copies the initial weights into non-trainable variables (checkpointed, see
    `checkpoint_trackables`) under `strategy`'s scope, fixes the probe batch and the train subset,
    and compiles the probes. `penalties()` returns the unscaled penalties of the objective;
    `seed` fixes the power iteration's start vector.
    """
    self._model, self._loss_fn, self._penalties = model, loss_fn, penalties
    self._classification, self._seed = classification, seed
    self._trainable = list(model.trainable_variables)
    self._regularized = regularized_variables(terms, model)
    self._excluded = selectors.excluded_variables(model)
    with strategy.scope():
      self._initial = _InitialWeights(self._trainable)
    self._probe = _first(train_examples, self.sharpness_examples)
    self._train_subset = _first(train_examples, self.train_eval_examples)
    self._statistics = _HostVector(self._named_statistics)
    self._sharpness = _HostVector(self._named_sharpness)
    self._train_eval = _HostVector(self._named_train_eval)

  def checkpoint_trackables(self) -> dict[str, tf.Module]:
    """What the checkpoint must hold for the metrics to continue across a resume."""
    return {"initial_weights": self._initial}

  def after_loop(self, previous_step: int, step: int) -> dict[str, float]:
    """The per-loop statistics, plus sharpness when its interval was crossed in (previous_step, step]."""
    scalars = self._statistics()
    if _crossed(previous_step, step, self.sharpness_every):
      scalars.update(self._sharpness())
    return scalars

  def histograms(self, previous_step: int, step: int) -> dict[str, tf.Variable]:
    """{`weights/<path>`: variable} of the regularized weights when due in (previous_step, step], else {}."""
    if not _crossed(previous_step, step, self.histogram_every):
      return {}
    return {f"weights/{compat.variable_path(v)}": v for v in self._regularized}

  def after_eval(self, eval_scalars: Mapping[str, float]) -> dict[str, float]:
    """`train_eval/*` on the fixed train subset and `gap/*` against the validation results."""
    if not self.train_eval_examples:
      return {}
    scalars = self._train_eval()
    scalars["gap/loss"] = eval_scalars["eval/loss"] - scalars["train_eval/loss"]
    if "train_eval/accuracy" in scalars:
      scalars["gap/accuracy"] = scalars["train_eval/accuracy"] - eval_scalars["eval/accuracy"]
    return scalars

  def _inference(self, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """(per-example loss, outputs) on `batch` in inference mode (no dropout, BN moving statistics)."""
    features, labels = batch
    outputs = self._model(features, training=False)
    return self._loss_fn(labels, outputs), outputs

  def _probe_data_loss(self) -> tf.Tensor:
    """Mean data loss on the probe batch."""
    return tf.reduce_mean(self._inference(self._probe)[0])

  def _named_train_eval(self) -> dict[str, tf.Tensor]:
    per_example, outputs = self._inference(self._train_subset)
    scalars = {"train_eval/loss": tf.reduce_mean(per_example)}
    if self._classification:
      correct = classification.correct_predictions(self._train_subset[1], outputs)
      scalars["train_eval/accuracy"] = tf.reduce_mean(correct)
    return scalars

  def _probe_objective(self) -> tf.Tensor:
    """The training objective on the probe batch: data loss + the unscaled penalties."""
    penalties = list(self._penalties().values())
    return self._probe_data_loss() + (tf.add_n(penalties) if penalties else 0.0)

  def _named_statistics(self) -> dict[str, tf.Tensor]:
    with tf.GradientTape() as tape:
      objective = self._probe_objective()
    gradients = tape.gradient(objective, self._trainable,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
    weights = self._regularized
    scalars = {
        "norms/weights_l2": weight_stats.global_l2_norm(weights),
        "norms/weights_l1": weight_stats.global_l1_norm(weights),
        "norms/excluded_l2": weight_stats.global_l2_norm(self._excluded),
        "norms/grad_l2": weight_stats.global_l2_norm(gradients),
        "norms/distance_from_init": weight_stats.distance(self._trainable, self._initial.values),
        "sparsity/zero_fraction": weight_stats.zero_fraction(weights),
        "sparsity/near_zero_fraction": weight_stats.near_zero_fraction(weights, self.near_zero_threshold),
    }
    for layer, norm in weight_stats.per_layer_kernel_l2(self._model).items():
      scalars[f"norms/{layer}/kernel_l2"] = norm
    return scalars

  def _named_sharpness(self) -> dict[str, tf.Tensor]:
    variables, loss = self._trainable, self._probe_data_loss
    eigenvalue, iterations = sharpness.hessian_top_eigenvalue(
        loss, variables, max_iterations=self.hessian_iterations, tolerance=self.hessian_tolerance,
        seed=self._seed)
    return {
        "sharpness/hessian_top_eigenvalue": eigenvalue,
        "sharpness/hessian_iterations": iterations,
        "sharpness/sam": sharpness.sam_sharpness(loss, variables, rho=self.sam_rho),
        "sharpness/sam_magnitude_aware": sharpness.sam_sharpness(loss, variables, rho=self.sam_rho,
                                                                 magnitude_aware=True),
    }


def regularized_variables(terms, model) -> list:
  """The union of the variables the terms cover (first-seen order), or the default selection.

  Only terms that shrink the weights they select count (`shrinks_weights`): Mixup, CutMix and SAM
  regularize without choosing weights to shrink, so a run with only them reports the default selection.
  """
  terms = [term for term in terms if term.shrinks_weights]
  if not terms:
    return [s.variable for s in selectors.VariableSelector().select(model)]
  found: dict[int, object] = {}
  for term in terms:
    for selected in term.selected:
      found.setdefault(id(selected.variable), selected.variable)
  return list(found.values())


class _InitialWeights(tf.Module):
  """Non-trainable copies of the weights at build time, for `norms/distance_from_init`."""

  def __init__(self, variables):
    super().__init__(name="initial_weights")
    self.values = [tf.Variable(tf.identity(v), trainable=False) for v in variables]


class _HostVector:
  """Compiles `fn` (returning {name: scalar}) and reads its values to the host in ONE transfer.

  Traced without AutoGraph: the statistics are straight-line TensorFlow code (the sharpness loops are
  `tf.while_loop`s), and AutoGraph would rewrite every Python function they call (the loss, the
  penalties, the probes) from source first: ~0.5 s of the first loop's start-up on the quickstart.
  """

  def __init__(self, fn: Callable[[], dict[str, tf.Tensor]]):
    self._fn = fn
    self._names: list[str] = []
    self._compiled = tf.function(self._stacked, autograph=False)

  def _stacked(self) -> tf.Tensor:
    named = self._fn()
    self._names = list(named)  # Recorded while tracing; the names are fixed per trace.
    return tf.stack([tf.cast(value, tf.float32) for value in named.values()])

  def __call__(self) -> dict[str, float]:
    values = self._compiled().numpy()
    return dict(zip(self._names, values.tolist()))


def _first(examples: tuple[np.ndarray, np.ndarray], count: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(features, labels) of the first `count` examples (all if there are fewer), as constants."""
  features, labels = examples
  return tf.constant(features[:count]), tf.constant(labels[:count])


def _crossed(previous_step: int, step: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (previous_step, step]; never for every = 0."""
  return every > 0 and step // every > previous_step // every


