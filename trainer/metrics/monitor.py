"""Loop-boundary metrics: weight norms, sparsity, gradient norm, flatness, generalization gap.

`Monitor` is the gin-configurable spec: plain settings, nothing built. The builder turns it into a
run's `MonitorState` (`Monitor.create_state`), which holds what the metrics need on the devices (the
initial weights, checkpointed; the probe examples, see `trainer.metrics.probe_data`) and computes the
metrics at the host loop's boundaries, never per step: the weight statistics (`norms/*`,
`sparsity/*`) in ONE compiled call whose results come back to the host as one vector, the gradient
norm on the probe batch every `grad_norm_every` steps, the sharpness probes when due, and the
train-subset evaluation after each validation evaluation.

Everything runs inside `strategy.run`, on every replica, as a TPU requires: each replica evaluates its
share of the probe examples (read from variables, never from graph constants) and the sums are
all-reduced, so every replica holds the same values and the host reads the first replica's. With one
replica the values are what a single device computes. (Going through the Trainer's `EvalProgram`
instead cost ~35 ms per evaluation on the quickstart, almost all of it creating a tf.data iterator.)

The tags and their formulas are documented in docs/METRICS.md.
"""

from __future__ import annotations

from typing import Callable, Mapping

import gin
import numpy as np
import tensorflow as tf

from trainer.common import checks
from trainer.metrics import classification, sharpness, weight_stats
from trainer.metrics.probe_data import ProbeData, Share
from trainer.regularization import selectors
from trainer.runtime import compat


@gin.configurable
class Monitor:
  """Generalization, penalty-side and flatness metrics for TensorBoard (bind `Trainer.monitor`).

  The spec: settings only. `create_state` builds a run's `MonitorState` from it (the builder calls it).

  Args (all gin-bindable; the defaults are the "default metric set" whose overhead docs/METRICS.md
  states):
    near_zero_threshold: `sparsity/near_zero_fraction` counts regularized weights with
      |w| < this (default 1e-3).
    train_eval_examples: the first N examples of the train split, evaluated in inference mode at
      every validation evaluation for `train_eval/*` and `gap/*` (default 512; 0 = off).
    sharpness_examples: the first N train examples form the fixed probe batch of `norms/grad_l2`
      and the sharpness probes (default 256).
    statistics_every: steps between the weight statistics (`norms/*` but `norms/grad_l2`,
      `sparsity/*`; default 1: at every loop end; 0 = off).
    grad_norm_every: steps between `norms/grad_l2` probes, each a forward and backward pass on the
      probe batch; also at the run's last step (default 500, as `Trainer.eval_every`: about 0.5 % of
      training's passes at batch 128, measured in docs/PERFORMANCE.md; 0 = off).
    sharpness_every: steps between sharpness probes (default 0 = off).
    hessian_iterations: maximum power iterations (HVPs) for the top eigenvalue (default 20).
    hessian_tolerance: power iteration stops when successive estimates differ by at most this,
      relative (default 1e-3).
    sam_rho: radius of the SAM perturbation (default 0.05).
    histogram_every: steps between histograms of the regularized weights (default 0 = off).

  Whatever runs "every N steps" runs at the first loop end at or after each multiple of N.
  """

  # Metrics only observe the run: a resumed run may change any of them (see trainer/config/guard.py).
  RESUME_SAFE = ("*",)

  def __init__(self, *, near_zero_threshold: float = 1e-3, train_eval_examples: int = 512,
               sharpness_examples: int = 256, statistics_every: int = 1, grad_norm_every: int = 500,
               sharpness_every: int = 0, hessian_iterations: int = 20, hessian_tolerance: float = 1e-3,
               sam_rho: float = 0.05, histogram_every: int = 0):
    owner = "Monitor"
    self.near_zero_threshold = checks.nonnegative(owner, "near_zero_threshold", near_zero_threshold)
    self.train_eval_examples = checks.integer(owner, "train_eval_examples", train_eval_examples, minimum=0)
    self.sharpness_examples = checks.integer(owner, "sharpness_examples", sharpness_examples, minimum=1)
    self.statistics_every = checks.integer(owner, "statistics_every", statistics_every, minimum=0)
    self.grad_norm_every = checks.integer(owner, "grad_norm_every", grad_norm_every, minimum=0)
    self.sharpness_every = checks.integer(owner, "sharpness_every", sharpness_every, minimum=0)
    self.histogram_every = checks.integer(owner, "histogram_every", histogram_every, minimum=0)
    self.hessian_iterations = checks.integer(owner, "hessian_iterations", hessian_iterations, minimum=1)
    self.hessian_tolerance = checks.nonnegative(owner, "hessian_tolerance", hessian_tolerance)
    self.sam_rho = checks.nonnegative(owner, "sam_rho", sam_rho)

  @property
  def train_examples_needed(self) -> int:
    """How many of the first training examples a run's Monitor holds (the probe batch, the train subset)."""
    return max(self.sharpness_examples, self.train_eval_examples)

  def create_state(self, *, strategy: tf.distribute.Strategy, model, terms,
                   train_examples: tuple[np.ndarray, np.ndarray], loss_fn: Callable,
                   penalties: Callable[[], dict[str, tf.Tensor]], classification: bool, seed: int,
                   train_steps: int) -> MonitorState:
    """A run's Monitor on its built parts (see `MonitorState`); the spec itself stays unchanged."""
    return MonitorState(self, strategy=strategy, model=model, terms=terms, train_examples=train_examples,
                        loss_fn=loss_fn, penalties=penalties, classification=classification, seed=seed,
                        train_steps=train_steps)


class MonitorState:
  """The Monitor of one run: its variables and compiled probes, and the metrics at loop boundaries.

  `train_examples` are (features, labels) of the first `spec.train_examples_needed` training examples
  (or more) as the model sees them in evaluation. Copies the initial weights into non-trainable
  variables (checkpointed, see `checkpoint_trackables`) and writes the probe examples into
  per-replica variables (`ProbeData`), both under `strategy`. `penalties()` returns the unscaled
  penalties of the objective; `seed` fixes the power iteration's start vector; at `train_steps`, the
  run's last step, the gradient norm is probed whatever its interval.
  """

  def __init__(self, spec: Monitor, *, strategy: tf.distribute.Strategy, model, terms,
               train_examples: tuple[np.ndarray, np.ndarray], loss_fn: Callable,
               penalties: Callable[[], dict[str, tf.Tensor]], classification: bool, seed: int,
               train_steps: int):
    self.spec = spec
    self._train_steps = train_steps
    self._strategy = strategy
    self._model, self._loss_fn, self._penalties = model, loss_fn, penalties
    self._classification, self._seed = classification, seed
    self._trainable = list(model.trainable_variables)
    self._regularized = regularized_variables(terms, model)
    self._excluded = selectors.excluded_variables(model)
    with strategy.scope():
      self._initial = _InitialWeights(self._trainable)
    held = spec.train_examples_needed
    self._probe = ProbeData(strategy, tuple(values[:held] for values in train_examples))
    # The loop-end work by (weight statistics due, gradient norm due): one call whatever is due.
    self._per_loop = {
        (True, False): _HostVector(self._named_statistics, strategy),
        (False, True): _HostVector(self._named_gradient_norm, strategy),
        (True, True): _HostVector(lambda: {**self._named_statistics(), **self._named_gradient_norm()},
                                  strategy),
    }
    self._sharpness = _HostVector(self._named_sharpness)  # cross-replica: it calls strategy.run itself
    self._train_eval = _HostVector(self._named_train_eval, strategy)

  def checkpoint_trackables(self) -> dict[str, tf.Module]:
    """What the checkpoint must hold for the metrics to continue across a resume."""
    return {"initial_weights": self._initial}

  def concrete_functions(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The Monitor's compiled functions by name, traced (what tests/test_tpu_rules.py scans)."""
    return {name: vector.concrete_function() for name, vector in (
        ("statistics", self._per_loop[True, False]), ("gradient_norm", self._per_loop[False, True]),
        ("statistics_and_gradient_norm", self._per_loop[True, True]), ("sharpness", self._sharpness),
        ("train_eval", self._train_eval))}

  def after_loop(self, previous_step: int, step: int) -> dict[str, float]:
    """What is due in (previous_step, step]: the weight statistics, the gradient norm (also at the
    last step), sharpness."""
    gradient_norm = self.spec.grad_norm_every > 0 and (
        _crossed(previous_step, step, self.spec.grad_norm_every) or step >= self._train_steps)
    due = (_crossed(previous_step, step, self.spec.statistics_every), gradient_norm)
    scalars = self._per_loop[due]() if any(due) else {}
    if _crossed(previous_step, step, self.spec.sharpness_every):
      scalars.update(self._sharpness())
    return scalars

  def histograms(self, previous_step: int, step: int) -> dict[str, tf.Variable]:
    """{`weights/<path>`: variable} of the regularized weights when due in (previous_step, step], else {}."""
    if not _crossed(previous_step, step, self.spec.histogram_every):
      return {}
    return {f"weights/{compat.variable_path(v)}": v for v in self._regularized}

  def after_eval(self, eval_scalars: Mapping[str, float]) -> dict[str, float]:
    """`train_eval/*` on the fixed train subset and `gap/*` against the validation results."""
    if not self.spec.train_eval_examples:
      return {}
    scalars = self._train_eval()
    scalars["gap/loss"] = eval_scalars["eval/loss"] - scalars["train_eval/loss"]
    if "train_eval/accuracy" in scalars:
      scalars["gap/accuracy"] = scalars["train_eval/accuracy"] - eval_scalars["eval/accuracy"]
    return scalars

  # The methods below run in replica context (inside `strategy.run`), except `_named_sharpness`.

  def _per_example_loss(self, share: Share) -> tuple[tf.Tensor, tf.Tensor]:
    """(per-example loss, outputs) on `share` in inference mode (no dropout, BN moving statistics)."""
    outputs = self._model(share.features, training=False)
    return self._loss_fn(share.labels, outputs), outputs

  def _probe_loss_share(self) -> tf.Tensor:
    """This replica's share of the mean data loss on the probe batch (the shares sum to the mean)."""
    share = self._probe.first(self.spec.sharpness_examples)
    return tf.nn.compute_average_loss(self._per_example_loss(share)[0], sample_weight=share.weights,
                                      global_batch_size=share.count)

  def _named_train_eval(self) -> dict[str, tf.Tensor]:
    share = self._probe.first(self.spec.train_eval_examples)
    per_example, outputs = self._per_example_loss(share)
    sums = [tf.reduce_sum(per_example * share.weights)]
    if self._classification:
      sums.append(tf.reduce_sum(classification.correct_predictions(share.labels, outputs) * share.weights))
    means = [total / share.count for total in sharpness.sum_over_replicas(sums)]
    return dict(zip(["train_eval/loss", "train_eval/accuracy"], means))

  def _named_gradient_norm(self) -> dict[str, tf.Tensor]:
    """`norms/grad_l2`: the gradient of the training objective (data loss + the unscaled penalties)."""
    with tf.GradientTape() as tape:
      objective = self._probe_loss_share()
      penalties = list(self._penalties().values())
      if penalties:  # every replica computes the whole penalty: its share is 1 / replicas of it
        objective += tf.nn.scale_regularization_loss(tf.add_n(penalties))
    gradients = tape.gradient(objective, self._trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return {"norms/grad_l2": weight_stats.global_l2_norm(sharpness.sum_over_replicas(gradients))}

  def _named_statistics(self) -> dict[str, tf.Tensor]:
    weights = self._regularized
    scalars = {
        "norms/weights_l2": weight_stats.global_l2_norm(weights),
        "norms/weights_l1": weight_stats.global_l1_norm(weights),
        "norms/excluded_l2": weight_stats.global_l2_norm(self._excluded),
        "norms/distance_from_init": weight_stats.distance(self._trainable, self._initial.values),
        "sparsity/zero_fraction": weight_stats.zero_fraction(weights),
        "sparsity/near_zero_fraction": weight_stats.near_zero_fraction(weights,
                                                                       self.spec.near_zero_threshold),
    }
    for layer, norm in weight_stats.per_layer_kernel_l2(self._model).items():
      scalars[f"norms/{layer}/kernel_l2"] = norm
    return scalars

  def _named_sharpness(self) -> dict[str, tf.Tensor]:
    """Cross-replica: each probe makes its own `strategy.run` calls of `_probe_loss_share`."""
    variables, loss, strategy, spec = self._trainable, self._probe_loss_share, self._strategy, self.spec
    eigenvalue, iterations = sharpness.hessian_top_eigenvalue(
        loss, variables, max_iterations=spec.hessian_iterations, tolerance=spec.hessian_tolerance,
        seed=self._seed, strategy=strategy)
    return {
        "sharpness/hessian_top_eigenvalue": eigenvalue,
        "sharpness/hessian_iterations": iterations,
        "sharpness/sam": sharpness.sam_sharpness(loss, variables, rho=spec.sam_rho, strategy=strategy),
        "sharpness/sam_magnitude_aware": sharpness.sam_sharpness(loss, variables, rho=spec.sam_rho,
                                                                 magnitude_aware=True, strategy=strategy),
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

  With a `strategy`, `fn` runs on every replica (inside `strategy.run`) and the first replica's values
  are read (the Monitor's replica functions all-reduce, so all replicas agree); without one, `fn` runs
  in cross-replica context. Traced without AutoGraph: the statistics are straight-line TensorFlow code
  (the sharpness loops are `tf.while_loop`s), and AutoGraph would rewrite every Python function they
  call (the loss, the penalties, the probes) from source first: ~0.5 s of the first loop's start-up
  on the quickstart.
  """

  def __init__(self, fn: Callable[[], dict[str, tf.Tensor]], strategy: tf.distribute.Strategy | None = None):
    self._fn, self._strategy = fn, strategy
    self._names: list[str] = []
    self._compiled = tf.function(self._stacked if strategy is None else self._on_replicas, autograph=False)

  def _stacked(self) -> tf.Tensor:
    named = self._fn()
    self._names = list(named)  # Recorded while tracing; the names are fixed per trace.
    return tf.stack([tf.cast(value, tf.float32) for value in named.values()])

  def _on_replicas(self) -> tf.Tensor:
    return self._strategy.experimental_local_results(self._strategy.run(self._stacked))[0]

  def concrete_function(self) -> tf.types.experimental.ConcreteFunction:
    return self._compiled.get_concrete_function()

  def __call__(self) -> dict[str, float]:
    values = self._compiled().numpy()
    return dict(zip(self._names, values.tolist()))


def _crossed(previous_step: int, step: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (previous_step, step]; never for every = 0."""
  return every > 0 and step // every > previous_step // every
