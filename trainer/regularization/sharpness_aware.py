"""Sharpness-aware minimization (SAM, Foret et al. 2021) and its adaptive variant (ASAM, Kwon et al. 2021).

SAM minimizes `max_{||e|| <= rho} L(w + e)` with one ascent step: at the weights `w` it takes the
gradient `g` of the objective (the data loss plus every penalty in the gradient tape), moves to
`w + e` with `e = rho * g / ||g||`, takes the objective's gradient there, restores `w` and lets the
optimizer step from `w` with that gradient. It wraps any optimizer, as `optax.contrib.sam` does.
ASAM measures the ball relative to each weight, `||e / T_w|| <= rho` with `T_w = |w| + eta`, whose
ascent step is `e = rho * T_w^2 g / ||T_w g||` (elementwise products). Which parameters `T_w` scales
(it is 1 for the others) is `scaled`:

- 'kernels' (the default): the weights of the default structural selection (kernels, embedding
  tables); `T_w = 1` for biases, every normalization parameter and PReLU slopes, as for weight decay.
- 'reference': what ASAM's reference code (PyTorch) scales, every parameter whose name contains
  'weight': the same kernels and embedding tables, and also the normalization layers' scales (gamma;
  PyTorch's `BatchNorm.weight`, `LayerNorm.weight`) and PReLU slopes. Biases, normalization offsets
  (beta) and declared offsets (ViT's class token and position embeddings: timm's `cls_token`,
  `pos_embed`) stay at 1 there too. A BatchNorm ResNet or a ViT follows another trajectory than with
  'kernels'; use it to reproduce the reference's numbers.

'kernels' stays the default: it is what Occam's published ASAM runs used, and the relative ball of
ASAM is motivated by the scale symmetry of weights followed by normalization, which a normalization
scale (like a bias) does not have; the reference's choice comes from a substring test on names.
One step costs two forward and backward passes.

`SAM` is the run's gradient estimator (`trainer.regularization.terms.GradientEstimator`): the train step
(`trainer.loop.programs.TrainProgram`) hands `SAM.estimate` a function that runs one forward and
backward pass at the current weights, and `estimate` does, in order:

1. gradient `g` at `w` (this gives `train/*`), all-reduced over the replicas (`perturbation='global'`)
   or this replica's own (`'per_replica'`: "m-sharpness" with m = the per-replica batch);
2. `w <- w + e` on the selected variables (per replica with `'per_replica'`), a copy of `w` kept;
3. gradient at `w + e` (the batch is the same, mixed or not);
4. `w <- the copy`: restored bit for bit (assigning the saved value, not subtracting `e`);
5. the update terms and the optimizer as without SAM: `DecoupledWeightDecay` on `w`, the optimizer step
   with the gradient of step 3, then `ProximalL1`.

The second pass leaves no trace in the model's non-trainable state: it starts from the state the
first one started from (Keras 3 draws the same dropout masks again) and afterwards the state the first
pass left (BatchNorm statistics of `w`, not of `w + e`) is put back.
"""

from __future__ import annotations

from typing import Callable, Sequence

import gin
import tensorflow as tf

from trainer.common import checks
from trainer.regularization import distributed_update, selectors, terms
from trainer.runtime import compat

PERTURBATIONS = ("global", "per_replica")
SCALED = ("kernels", "reference")


@gin.configurable
class SAM(terms.GradientEstimator):
  """Sharpness-aware minimization around any optimizer; `adaptive=True` is ASAM.

  Args:
    rho: the radius of the ascent step (> 0). Foret et al. use 0.05 (0.01-0.1 for plain SAM); ASAM's
      ball is relative, its paper uses 0.5 (1.0 on CIFAR-100).
    adaptive: ASAM's scale-invariant ascent `e = rho * T_w^2 g / ||T_w g||`, `T_w = |w| + eta`.
    eta: ASAM's offset in `T_w` (>= 0; the paper's 0.01), which keeps weights at 0 movable; unused
      (and not reported) without `adaptive`.
    scaled: which parameters ASAM's `T_w` scales (1 for the others): 'kernels' (the default
      structural selection: kernels, embedding tables) or 'reference' (also normalization scales and
      PReLU slopes, as ASAM's reference code does); see the module docstring. Unused (and not
      reported) without `adaptive`.
    perturbation: 'global' (the all-reduced gradient: every replica ascends to the same `w + e`, the
      run is replica-invariant) or 'per_replica' (each replica ascends along its own gradient,
      "m-sharpness" of Foret et al. with m = the per-replica batch; depends on the replica count).
    selector: the variables perturbed; default every trainable variable, as in the papers. Layer
      multipliers (`layer_scales`) are refused: the ball has one radius.
    name: the term's name in logs and HParams (`reg/<name>/rho`, ...).
  """

  train_tags = ("sharpness/sam_train", "sharpness/sam_train_perturbation_norm")

  def __init__(self, rho: float, *, adaptive: bool = False, eta: float = 0.01, scaled: str = "kernels",
               perturbation: str = "global", selector: selectors.VariableSelector | None = None,
               name: str = "sam"):
    if selector is None:
      selector = selectors.VariableSelector(exclude_biases_and_norms=False)
    super().__init__(name=name, selector=selector)
    self.rho = checks.positive(name, "rho", rho)
    self.adaptive = bool(adaptive)
    eta = checks.nonnegative(name, "eta", eta)
    self.eta = eta if self.adaptive else None  # plain SAM has no T_w (and HParams shows no eta)
    if scaled not in SCALED:
      raise ValueError(f"{name}: unknown scaled {scaled!r}; valid values are {list(SCALED)}")
    self.scaled = scaled if self.adaptive else None
    if perturbation not in PERTURBATIONS:
      raise ValueError(f"{name}: unknown perturbation {perturbation!r}; valid values are "
                       f"{list(PERTURBATIONS)}")
    self.perturbation = perturbation
    self._normalized: list[bool] = []
    self._model = None
    self._indices: list[int] = []  # of the perturbed variables in `model.trainable_variables`

  def bind(self, model) -> None:
    """Selects the perturbed variables; with ASAM, notes which of them `T_w = |w| + eta` scales."""
    super().bind(model)
    scaled = [s.path for s in self.selected if s.multiplier != 1.0]
    if scaled:
      raise ValueError(f"{self.name}: SAM's ascent has one radius rho; layer_scales multipliers are not "
                       f"supported (got them on {scaled}); select variables with include/exclude instead")
    unscaled = {id(v) for v in selectors.excluded_variables(model)}
    if self.scaled == "reference":
      unscaled -= _reference_scaled_extras(model)
    self._normalized = [self.adaptive and id(s.variable) not in unscaled for s in self.selected]
    trainable = {id(v): index for index, v in enumerate(model.trainable_variables)}
    self._indices = [trainable[id(s.variable)] for s in self.selected]
    self._model = model

  @property
  def variables(self) -> list:
    """The perturbed variables, in `model.trainable_variables` order."""
    return [s.variable for s in self._bound()]

  def ascent(self, weights: Sequence[tf.Tensor], gradients: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """The ascent step `e` (float32, one tensor per perturbed variable) from their values and gradients.

    A zero gradient gives `e = 0` (not NaN); a non-finite one gives a non-finite `e`, which the
    non-finite guard reports as non-finite gradients.
    """
    self._bound()
    scales = [tf.abs(w) + self.eta if normalized else 1.0  # T_w; 1 where ASAM does not scale (and in SAM)
              for w, normalized in zip(weights, self._normalized)]
    scaled = [t * g for t, g in zip(scales, gradients)]
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(s)) for s in scaled]))
    return [tf.math.divide_no_nan(self.rho * t * s, norm) for t, s in zip(scales, scaled)]

  def _settings(self) -> str:
    eta = f", eta={self.eta:g}, scaled={self.scaled!r}" if self.adaptive else ""
    return f"rho={self.rho:g}, adaptive={self.adaptive}{eta}, perturbation={self.perturbation!r}"

  def _hparams(self) -> dict:
    adaptive = {"eta": self.eta, "scaled": self.scaled} if self.adaptive else {}  # plain SAM has no T_w
    return {"rho": self.rho, "adaptive": self.adaptive, **adaptive, "perturbation": self.perturbation}

  def estimate(self, compute: Callable[[], terms.GradientPass], metrics) -> terms.GradientPass:
    """The first pass at `w` (it gives `train/*`) with the gradient of a second pass at `w + e`.

    The second pass starts from the model's non-trainable state from before the first pass, and the
    state the first pass left is put back afterwards.
    """
    non_trainable = self._model.non_trainable_variables
    state = snapshot(non_trainable)
    first = compute()
    replica_context = tf.distribute.get_replica_context()
    ascent = [_dense(first.gradients[index], variable)
              for index, variable in zip(self._indices, self.variables)]
    if self.perturbation == "global":
      ascent = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, ascent)
    after_first_pass = snapshot(non_trainable)
    restore(non_trainable, state)
    saved = snapshot(self.variables)
    weights = [tf.cast(w, tf.float32) for w in saved]
    perturbation = self.ascent(weights, ascent)
    distributed_update.assign_values(self.variables, [w + e for w, e in zip(weights, perturbation)])
    perturbed = compute()
    distributed_update.assign_values(self.variables, saved)  # bit for bit: the saved values, not w + e - e
    restore(non_trainable, after_first_pass)
    count = tf.cast(tf.shape(perturbed.per_example)[0], tf.float32)
    increase = (tf.reduce_sum(perturbed.per_example) - tf.reduce_sum(first.per_example)
                + (perturbed.penalty_total - first.penalty_total) * count)
    metrics["sharpness/sam_train"].update(increase, count)
    metrics["sharpness/sam_train_perturbation_norm"].update(tf.linalg.global_norm(perturbation), 1.0)
    return first._replace(gradients=perturbed.gradients)


def _reference_scaled_extras(model) -> set[int]:
  """Ids of the variables ASAM's reference code scales beyond the default selection: the trainable
  weights of normalization layers except their offset `beta` (gamma; Keras 3 `RMSNormalization`'s
  `scale`), and PReLU slopes, all of which PyTorch names `weight`."""
  extras = set()
  for layer in compat.flatten_layers(model):
    if isinstance(layer, compat.normalization_layer_types()):
      extras |= {id(w) for w in layer.trainable_weights if w is not getattr(layer, "beta", None)}
    elif isinstance(layer, tf.keras.layers.PReLU):
      extras |= {id(w) for w in layer.trainable_weights}
  return extras


def snapshot(variables: Sequence) -> list[tf.Tensor]:
  """The current values of `variables` (this replica's copies in replica context)."""
  return [compat.tf_variable(v).read_value() for v in variables]


def restore(variables: Sequence, values: Sequence[tf.Tensor]) -> None:
  """Assigns `snapshot`'s values back, each replica its own copy, as the layers update this state."""
  for variable, value in zip(variables, values):
    compat.tf_variable(variable).assign(value)


def _dense(gradient, variable) -> tf.Tensor:
  """A gradient as a dense float32 tensor: IndexedSlices (embeddings) densified, None (unused) as zeros."""
  if gradient is None:
    return tf.zeros(variable.shape, tf.float32)
  return tf.cast(tf.convert_to_tensor(gradient), tf.float32)
