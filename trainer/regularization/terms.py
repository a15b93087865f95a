"""Regularization terms and the five roles a term plays in the training step.

Users bind one list, `Trainer.regularizers`; `by_role` sorts it by the protocol each term implements,
and the train step (`trainer.loop.programs.TrainProgram`) calls each role at its place:

* `LossTerm` (`L2`, `L1`): `penalty()` is read inside the gradient tape, so it flows through the
  optimizer (for Adam it is rescaled per coordinate, which is why Adam + L2 is not weight decay).
* `UpdateTerm` (`DecoupledWeightDecay`, `ProximalL1`): modifies the variables directly, before or after
  `optimizer.apply_gradients`, independently of the optimizer's preconditioning. This composes with
  any optimizer, like optax's `add_decayed_weights`, instead of one subclass per optimizer.
* `BatchTransform` (`Mixup`, `CutMix`, trainer/regularization/mixing.py; at most one): changes each
  replica's batch before the forward pass, and the loss and accuracy it is scored with.
* `GradientEstimator` (`SAM`, ASAM, trainer/regularization/sharpness_aware.py; at most one): decides at
  which weights the step's gradient is taken; without one, the gradient is one forward and backward
  pass at the current weights.
* `WeightAverage` (`EMA`, `SWA`, trainer/regularization/averaging.py): keeps an average of the weights
  the run passes through, updated after each step, without changing the trajectory; the run also
  evaluates and exports the average. The term is a plain spec: the builder creates its state (the
  averaged variables) under the strategy's scope with `create_state`.

Each term acts on the variables its `VariableSelector` picks (default: kernels, not biases or
normalization parameters), and declares what the run reports about it: its HParams entries
(`hparams()`, reported as `reg/<name>/<key>`) and the TensorBoard tags its step writes (`train_tags`,
each registered in trainer/metrics/tags.py). Batch transforms and gradient estimators shrink no
weights (`shrinks_weights = False`), so the weight statistics and the overlap warning ignore them.

The builder binds each term to the model once (`bind`); per step the program calls `penalty()` in
the tape (and scales the sum once with `tf.nn.scale_regularization_loss`), and `before_step` /
`after_step` in replica context around `apply_gradients`. All per-step work is vectorized TF ops,
computed in float32.
"""

from __future__ import annotations

import collections
import functools
import math
import re
import typing
from collections.abc import Callable, Sequence

import gin
import tensorflow as tf

from trainer.common import checks
from trainer.regularization import distributed_update, selectors
from trainer.runtime import compat

# Decoupled weight decay conventions (see docs/REGULARIZATION.md, "Decoupled weight decay"):
#   lr_coupled: w -= lr_t * rate * w. Keras 3 and tf_keras optimizers' `weight_decay`, PyTorch
#     AdamW, optax adamw.
#   schedule_multiplier: w -= (lr_t / lr_0) * rate * w. Loshchilov & Hutter (ICLR 2019), Alg. 2,
#     where eta_t is the schedule multiplier; equals tensorflow-addons'
#     DecoupledWeightDecayExtension (`w -= wd * w`) for a constant learning rate.
CONVENTIONS = ("lr_coupled", "schedule_multiplier")

# Layer attributes holding a regularizer -> the attribute holding the variable it regularizes.
_REGULARIZED_ATTRIBUTES = {
    "kernel_regularizer": "kernel",
    "bias_regularizer": "bias",
    "recurrent_regularizer": "recurrent_kernel",
    "depthwise_regularizer": "depthwise_kernel",
    "pointwise_regularizer": "pointwise_kernel",
    "embeddings_regularizer": "embeddings",
    "beta_regularizer": "beta",
    "gamma_regularizer": "gamma",
}


class _Term:
  """What both kinds of term share: a name, a selector, and the variables it selected."""

  # Whether the term penalizes or shrinks the variables it selects: those are the run's "regularized
  # weights" that `norms/*` and `sparsity/*` describe (trainer/metrics/monitor.py).
  shrinks_weights = True

  def __init__(self, *, name: str, selector: selectors.VariableSelector | None):
    self.name = name
    self.selector = selector if selector is not None else selectors.VariableSelector()
    self.selected: list[selectors.SelectedVariable] | None = None

  def bind(self, model) -> None:
    """Resolves the selected variables of `model`; an invalid selection raises ValueError naming this term."""
    try:
      self.selected = self.selector.select(model)
    except ValueError as error:
      raise ValueError(f"{self.name}: {error}") from error

  def describe(self) -> str:
    """One header line with the settings, then the covered variables (or 'not bound')."""
    header = f"{self.name}: {type(self).__name__}({self._settings()})"
    if self.selected is None:
      return f"{header}, not bound to a model"
    return f"{header} on {selectors.describe(self.selected)}"

  def _settings(self) -> str:
    raise NotImplementedError

  def hparams(self) -> dict[str, bool | int | float | str]:
    """What HParams reports for this term, by key (`reg/<name>/<key>`): its type, then its settings."""
    return {"type": type(self).__name__, **self._hparams()}

  def _hparams(self) -> dict[str, bool | int | float | str]:
    """The term's hyperparameters as the run uses them (validated values, not gin text)."""
    raise NotImplementedError

  def _bound(self) -> list[selectors.SelectedVariable]:
    if self.selected is None:
      raise RuntimeError(f"{self.name}: call bind(model) before using the term")
    return self.selected


class LossTerm(_Term):
  """A penalty added to the loss inside the gradient tape (its tag `penalty/<name>` is the program's)."""

  def penalty(self) -> tf.Tensor:
    """The penalty as an unscaled float32 scalar, from the variables' current values."""
    raise NotImplementedError


class UpdateTerm(_Term):
  """A decoupled update of the selected variables around `apply_gradients`, in replica context."""

  # The no-op defaults run inside the compiled step; not converting them keeps AutoGraph from warning
  # that it "could not transform" a body without statements.
  @tf.autograph.experimental.do_not_convert
  def before_step(self, learning_rate: tf.Tensor, base_learning_rate: float) -> None:
    """Runs after the gradients are computed, before `apply_gradients`. Default: nothing."""

  @tf.autograph.experimental.do_not_convert
  def after_step(self, learning_rate: tf.Tensor, base_learning_rate: float) -> None:
    """Runs after `apply_gradients`. Default: nothing."""

  def objective_penalty(self, base_learning_rate: float) -> tf.Tensor | None:
    """What this term adds to the objective, as a float32 scalar from the current weights (`penalty/<term>`).

    An update term is not differentiated, so `train/loss` does not contain it; this is logged next to it.
    None (the default) for a term that adds no penalty to the objective.
    """
    return None

  def effective_decay(self, learning_rate, base_learning_rate) -> tf.Tensor:
    """The multiplicative decay per step applied at multiplier 1 (`optimizer/weight_decay`)."""
    return tf.zeros((), tf.float32)


class GradientPass(typing.NamedTuple):
  """One forward and backward pass on a replica's batch, at the variables' current values."""
  gradients: list  # of `model.trainable_variables`, unscaled (mixed_float16's loss scale removed)
  outputs: tf.Tensor
  per_example: tf.Tensor  # the per-example data loss
  penalties: dict  # each loss term's unscaled penalty by name (and `model_losses`)
  penalty_total: tf.Tensor


class BatchTransform(_Term):
  """Transforms each replica's batch before the forward pass, and how it is scored (one per run).

  `__call__` returns the transformed batch (`features` plus whatever `loss` and `correct` need);
  `record` adds this step's `train_tags` to the loop's metrics. It acts on the batch, not on
  variables: `selected` is empty after `bind`.
  """

  shrinks_weights = False
  role = "batch transform (Mixup, CutMix)"
  train_tags: tuple[str, ...] = ()

  def bind(self, model) -> None:
    del model  # acts on the batch, not on variables
    self.selected = []

  def __call__(self, features: tf.Tensor, labels: tf.Tensor, *, seed: int, step: tf.Tensor,
               replica: tf.Tensor):
    """This replica's transformed batch at `step`: a pure function of (seed, step, replica)."""
    raise NotImplementedError

  def loss(self, loss_fn: Callable, labels: tf.Tensor, outputs: tf.Tensor, batch) -> tf.Tensor:
    """The per-example loss of the transformed `batch` (whose original labels are `labels`)."""
    raise NotImplementedError

  def correct(self, correct_fn: Callable, labels: tf.Tensor, outputs: tf.Tensor, batch) -> tf.Tensor:
    """The per-example accuracy credit of the transformed `batch`, from `correct_fn(labels, outputs)`."""
    raise NotImplementedError

  def record(self, metrics, batch) -> None:
    """Adds this step's values of `train_tags` to `metrics` (`metrics[tag].update(sum, count)`)."""


class GradientEstimator(_Term):
  """Takes the step's gradient from the batch (one per run; without one, a single pass at `w`).

  `estimate(compute, metrics)` may call `compute()`, one forward and backward pass at the variables'
  current values, as often as it needs, moving the variables in between and putting them back bit
  for bit; it returns the pass whose `train/*` the step reports, carrying the gradient to apply. It
  runs in replica context (`tf.distribute.get_replica_context()` all-reduces) and writes its
  `train_tags` into `metrics`.
  """

  shrinks_weights = False
  role = "gradient estimator (SAM, ASAM)"
  train_tags: tuple[str, ...] = ()

  def estimate(self, compute: Callable[[], GradientPass], metrics) -> GradientPass:
    raise NotImplementedError


class WeightAverage(_Term):
  """An average of the weights along the trajectory (a spec of plain values; its state is separate).

  `create_state(model, ...)` (under the strategy's scope, called by the builder) creates the averaged
  variables; the train step updates them after the optimizer step and every update term. It changes
  no weight the run trains, so it shrinks nothing and covers every trainable variable.
  """

  shrinks_weights = False
  role = "weight average (EMA, SWA)"
  # Whether the average's BatchNorm statistics are recomputed on training data before it is evaluated,
  # from how many batches (None: one epoch).
  recomputes_statistics = False
  statistics_batches: int | None = None

  # The run's own entries of model_dir, which an average's export (`model_dir/<name>/saved_model`) and
  # results (`<name>/test/*`) must not reuse: early stopping's `best/` above all.
  RESERVED_NAMES = ("best", "checkpoints", "train", "eval")

  def __init__(self, *, name: str):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name in self.RESERVED_NAMES:
      raise ValueError(f"{type(self).__name__}.name={name!r}: the name is a directory of model_dir "
                       f"(its export {name}/saved_model, its run eval_{name}/): use letters, digits, "
                       f"'_', '-' or '.', and none of {list(self.RESERVED_NAMES)}")
    super().__init__(name=name, selector=selectors.VariableSelector(exclude_biases_and_norms=False))

  def create_state(self, model, *, statistics_batches: Callable[[], typing.Iterable] | None = None):
    """The averaged variables of `model` and their update (call under the strategy's scope).

    `statistics_batches()`: (features, labels) batches of training data, for an average that
    recomputes BatchNorm statistics before it is evaluated (SWA).
    """
    raise NotImplementedError


class Roles(typing.NamedTuple):
  """`Trainer.regularizers` sorted by role, each role in the order the terms were given."""
  loss_terms: tuple[LossTerm, ...] = ()
  update_terms: tuple[UpdateTerm, ...] = ()
  batch_transform: BatchTransform | None = None
  gradient_estimator: GradientEstimator | None = None
  weight_averages: tuple[WeightAverage, ...] = ()

  @property
  def train_tags(self) -> tuple[str, ...]:
    """The tags the batch transform and the gradient estimator write in the step."""
    return tuple(tag for term in (self.batch_transform, self.gradient_estimator) if term is not None
                 for tag in term.train_tags)


def by_role(regularizers: Sequence) -> Roles:
  """Sorts terms by the protocol each implements; ValueError/TypeError naming the culprit term."""
  kinds = {LossTerm: [], UpdateTerm: [], BatchTransform: [], GradientEstimator: [], WeightAverage: []}
  for term in regularizers:
    kind = next((kind for kind in kinds if isinstance(term, kind)), None)
    if kind is None:
      raise TypeError(f"{term!r} is not a regularization term (a LossTerm, UpdateTerm, BatchTransform, "
                      "GradientEstimator or WeightAverage; bind terms with parentheses, e.g. @L2())")
    kinds[kind].append(term)
  names = [term.name for term in kinds[WeightAverage]]
  if len(set(names)) < len(names):
    raise ValueError(f"weight averages need distinct names (each is evaluated into eval_<name>/), "
                     f"got {names}")
  singles = []
  for kind in (BatchTransform, GradientEstimator):
    found = kinds[kind]
    if len(found) > 1:
      raise ValueError(f"at most one {kind.role} per run, got {[t.name for t in found]}")
    singles.append(found[0] if found else None)
  return Roles(tuple(kinds[LossTerm]), tuple(kinds[UpdateTerm]), *singles, tuple(kinds[WeightAverage]))


@gin.configurable
class L2(LossTerm):
  """`scale * sum(multiplier * w**2)`: the Keras `L2` convention, without a factor 1/2.

  With plain SGD this equals lr-coupled decoupled decay with rate `2 * scale`; with adaptive
  optimizers it does not (the penalty gradient is preconditioned too).
  """

  def __init__(self, scale: float, *, selector: selectors.VariableSelector | None = None,
               name: str = "l2"):
    super().__init__(name=name, selector=selector)
    self.scale = checks.nonnegative(name, "scale", scale)

  def penalty(self) -> tf.Tensor:
    # 2 * tf.nn.l2_loss(w) == sum(w**2), as one fused op whose gradient is a single multiply:
    # measured 1.8x cheaper than reduce_sum(square(w)) on a 1.9M-weight MLP (CPU time, TF 2.21).
    return self.scale * _weighted_sum(self._bound(), lambda w: 2.0 * tf.nn.l2_loss(w))

  def _settings(self) -> str:
    return f"scale={self.scale:g}"

  def _hparams(self) -> dict:
    return {"scale": self.scale}


@gin.configurable
class L1(LossTerm):
  """`scale * sum(multiplier * |w|)`, the Keras `L1` convention.

  Its gradient is the subgradient `sign(w)`, so weights oscillate around zero instead of becoming
  exactly zero; use `ProximalL1` for exact sparsity.
  """

  def __init__(self, scale: float, *, selector: selectors.VariableSelector | None = None,
               name: str = "l1"):
    super().__init__(name=name, selector=selector)
    self.scale = checks.nonnegative(name, "scale", scale)

  def penalty(self) -> tf.Tensor:
    return self.scale * _weighted_sum(self._bound(), lambda w: tf.reduce_sum(tf.abs(w)))

  def _settings(self) -> str:
    return f"scale={self.scale:g}"

  def _hparams(self) -> dict:
    return {"scale": self.scale}


@gin.configurable
class DecoupledWeightDecay(UpdateTerm):
  """Decoupled weight decay `w -= d_t * multiplier * w`, applied to w_{t-1} before the step.

  `d_t = lr_t * rate` (convention 'lr_coupled', as Keras 3 `AdamW` / PyTorch `AdamW`) or
  `d_t = (lr_t / base_lr) * rate` ('schedule_multiplier', Loshchilov & Hutter Alg. 2; equals tfa
  `AdamW`/`SGDW` with `weight_decay=rate` for a constant learning rate). Applying it before the
  step equals applying it in the optimizer (Keras 3 decays in `apply_gradients` before the step,
  tfa via a control dependency before it): the gradient step does not read w.
  """

  def __init__(self, rate: float, *, convention: str = "lr_coupled",
               selector: selectors.VariableSelector | None = None, name: str = "weight_decay"):
    super().__init__(name=name, selector=selector)
    self.rate = checks.nonnegative(name, "rate", rate)
    if convention not in CONVENTIONS:
      raise ValueError(f"{name}: unknown convention {convention!r}; valid conventions are "
                       f"{list(CONVENTIONS)}")
    self.convention = convention

  def effective_decay(self, learning_rate, base_learning_rate) -> tf.Tensor:
    learning_rate = tf.cast(learning_rate, tf.float32)
    if self.convention == "lr_coupled":
      return learning_rate * self.rate
    base = checks.positive(self.name, "base_learning_rate", base_learning_rate)
    return learning_rate / base * self.rate

  def objective_penalty(self, base_learning_rate: float) -> tf.Tensor:
    """The L2 value whose plain-SGD gradient step is this decay: `c * sum(multiplier * w**2)`.

    `c = rate / 2` ('lr_coupled': the step `lr_t * rate * w`) or `rate / (2 * base_lr)`
    ('schedule_multiplier'). Only an equivalence under plain SGD: with adaptive optimizers decoupled
    decay minimizes no fixed objective, which is why it is decoupled.
    """
    coefficient = self.rate / 2
    if self.convention == "schedule_multiplier":
      coefficient /= checks.positive(self.name, "base_learning_rate", base_learning_rate)
    return coefficient * _weighted_sum(self._bound(), lambda w: 2.0 * tf.nn.l2_loss(w))

  def before_step(self, learning_rate: tf.Tensor, base_learning_rate: float) -> None:
    decay = self.effective_decay(learning_rate, base_learning_rate)
    distributed_update.assign_once(
        [(s.variable, functools.partial(_decayed, multiplier=s.multiplier)) for s in self._bound()],
        args=(decay,))

  def _settings(self) -> str:
    return f"rate={self.rate:g}, convention={self.convention!r}"

  def _hparams(self) -> dict:
    return {"rate": self.rate, "convention": self.convention}


@gin.configurable
class ProximalL1(UpdateTerm):
  """Proximal L1 (ISTA/FOBOS soft-thresholding) after the step, giving exact zeros.

  `w <- sign(w) * max(|w| - lr_t * scale * multiplier, 0)`: the proximal operator of
  `scale * |w|` for step size `lr_t`, as in TF's `ApplyProximalGradientDescent`.
  """

  def __init__(self, scale: float, *, selector: selectors.VariableSelector | None = None,
               name: str = "proximal_l1"):
    super().__init__(name=name, selector=selector)
    self.scale = checks.nonnegative(name, "scale", scale)

  def objective_penalty(self, base_learning_rate: float) -> tf.Tensor:
    """`scale * sum(multiplier * |w|)`: the nonsmooth part of the objective the proximal steps minimize."""
    del base_learning_rate  # the threshold follows lr_t; the objective does not
    return self.scale * _weighted_sum(self._bound(), lambda w: tf.reduce_sum(tf.abs(w)))

  def after_step(self, learning_rate: tf.Tensor, base_learning_rate: float) -> None:
    threshold = tf.cast(learning_rate, tf.float32) * self.scale
    distributed_update.assign_once(
        [(s.variable, functools.partial(_soft_threshold, multiplier=s.multiplier))
         for s in self._bound()],
        args=(threshold,))

  def _settings(self) -> str:
    return f"scale={self.scale:g}"

  def _hparams(self) -> dict:
    return {"scale": self.scale}


@gin.configurable
def normalized_decay_rate(rate_norm: float, batch_size: int, num_examples: int,
                          epochs: float) -> float:
  """`rate_norm * sqrt(b / (B * T))`: Loshchilov & Hutter (ICLR 2019), App. B.1, normalized decay.

  Makes one decay setting transfer across batch sizes and training lengths. Bind it in gin as
  `DecoupledWeightDecay.rate = @normalized_decay_rate()`.
  """
  rate_norm = checks.nonnegative("normalized_decay_rate", "rate_norm", rate_norm)
  batch_size = checks.positive("normalized_decay_rate", "batch_size", batch_size)
  num_examples = checks.positive("normalized_decay_rate", "num_examples", num_examples)
  epochs = checks.positive("normalized_decay_rate", "epochs", epochs)
  return rate_norm * math.sqrt(batch_size / (num_examples * epochs))


def layer_regularized_variables(model) -> list:
  """Trainable variables that a layer's own regularizer (e.g. `kernel_regularizer`) penalizes.

  Found by the layer's `*_regularizer` attributes and, on Keras 3, the variable's `regularizer`.
  """
  found: dict[int, object] = {}
  for layer in compat.flatten_layers(model):
    for regularizer_attribute, variable_attribute in _REGULARIZED_ATTRIBUTES.items():
      variable = getattr(layer, variable_attribute, None)
      if getattr(layer, regularizer_attribute, None) is not None and variable is not None:
        found[id(variable)] = variable
  trainable = model.trainable_variables
  for variable in trainable:
    if getattr(variable, "regularizer", None) is not None:
      found[id(variable)] = variable
  trainable_ids = {id(v) for v in trainable}
  return [v for key, v in found.items() if key in trainable_ids]


def overlap_warning(terms: Sequence[LossTerm | UpdateTerm], model) -> str | None:
  """A message naming variables hit by both a term and their layer's own regularizer, else None."""
  regularized = {id(v) for v in layer_regularized_variables(model)}
  lines = []
  for term in terms:
    if not term.shrinks_weights:
      continue
    selected = term.selected if term.selected is not None else term.selector.select(model)
    paths = [s.path for s in selected if id(s.variable) in regularized]
    if paths:
      lines.append(f"  {term.name}: {', '.join(paths)}")
  if not lines:
    return None
  return ("variables regularized twice, by a term and by their layer's own regularizer "
          "(model.losses):\n" + "\n".join(lines))


def _weighted_sum(selected: Sequence[selectors.SelectedVariable],
                  reduce: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
  """`sum(multiplier * reduce(w))` in float32, one multiply per distinct multiplier."""
  by_multiplier = collections.defaultdict(list)
  for s in selected:
    by_multiplier[s.multiplier].append(reduce(tf.cast(s.variable, tf.float32)))
  return tf.add_n([multiplier * tf.add_n(parts) for multiplier, parts in by_multiplier.items()])


def _decayed(w: tf.Tensor, decay: tf.Tensor, *, multiplier: float) -> tf.Tensor:
  return w - w * (decay * multiplier)


def _soft_threshold(w: tf.Tensor, threshold: tf.Tensor, *, multiplier: float) -> tf.Tensor:
  return tf.sign(w) * tf.maximum(tf.abs(w) - threshold * multiplier, 0.0)
