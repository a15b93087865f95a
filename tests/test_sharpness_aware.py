"""SAM and ASAM against a numpy re-implementation of the papers' updates, composed with the other terms.

The reference trains the same tiny tanh MLP (4-5-3, softmax cross entropy) in float64 with
hand-written backpropagation and Keras' own SGD-momentum and Adam formulas, so the comparison is
independent of TensorFlow's autodiff and optimizers. Occam runs in float32. The tolerances are the
float32 floor of each optimizer over 8 steps at learning rate 0.1, measured with a vanishing rho
(SAM is then the plain step): SGD with momentum 1.1e-7, Adam 4.6e-6 (Adam divides by sqrt(v), which
magnifies the rounding of small gradients). With SAM and ASAM the differences are the same size.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from trainer.loop import losses, schedules
from trainer.loop.programs import TrainProgram
from trainer.regularization import mixing, terms
from trainer.regularization.sharpness_aware import SAM
from trainer.runtime import compat

STEPS, BATCH, LEARNING_RATE = 8, 8, 0.1
TOLERANCE = {"SGD": 1e-6, "Adam": 1e-5}


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """STEPS batches of BATCH examples, 4 features, 3 classes."""
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(STEPS, BATCH, 4)).astype(np.float32),
          rng.integers(0, 3, size=(STEPS, BATCH)).astype(np.int32))


def _model(seed: int = 1, *, batch_norm: bool = False, dropout: float = 0.0) -> tf.keras.Model:
  tf.keras.utils.set_random_seed(seed)
  layers = [tf.keras.layers.Dense(5, activation="tanh")]
  layers += [tf.keras.layers.BatchNormalization()] if batch_norm else []
  layers += [tf.keras.layers.Dropout(dropout)] if dropout else []
  model = tf.keras.Sequential(layers + [tf.keras.layers.Dense(3)])
  model(tf.zeros((1, 4)))
  return model


def _program(model, optimizer, regularizers, *, strategy=None, learning_rate: float = LEARNING_RATE,
             jit_compile: bool = False) -> TrainProgram:
  strategy = strategy or tf.distribute.get_strategy()
  schedule = schedules.Scaled(schedules.Constant(learning_rate))
  with strategy.scope():
    optimizer = optimizer(learning_rate=schedule)
    compat.build_optimizer(optimizer, model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
  for term in regularizers:
    term.bind(model)
  return TrainProgram(strategy=strategy, model=model, optimizer=optimizer, schedule=schedule,
                      loss_fn=losses.softmax_cross_entropy, global_batch_size=BATCH,
                      terms=terms.by_role(regularizers),
                      include_model_losses=False, classification=True, step=step, seed=0,
                      jit_compile=jit_compile)


def _train(program: TrainProgram, features: np.ndarray, labels: np.ndarray, strategy=None) -> None:
  """One step per batch of `features`; with several replicas each batch is split between them in order."""
  strategy = strategy or tf.distribute.get_strategy()
  dataset = tf.data.Dataset.from_tensor_slices((features.reshape(-1, 4), labels.reshape(-1))).batch(BATCH)
  assert int(program.loop(iter(strategy.experimental_distribute_dataset(dataset)), tf.constant(STEPS))) == -1


def _weights(model) -> list[np.ndarray]:
  return [v.numpy().astype(np.float64) for v in model.trainable_variables]  # W1, b1, W2, b2


# ----- the numpy reference ------------------------------------------------------------------------

def _gradient(params, x, y, *, l2: float = 0.0) -> list[np.ndarray]:
  """Gradient of mean softmax cross entropy + l2 * sum(W^2) over the kernels, by hand."""
  w1, b1, w2, b2 = params
  hidden = np.tanh(x @ w1 + b1)
  logits = hidden @ w2 + b2
  probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
  probabilities /= probabilities.sum(axis=1, keepdims=True)
  d_logits = (probabilities - np.eye(3)[y]) / len(y)
  d_hidden = (d_logits @ w2.T) * (1 - hidden**2)
  return [x.T @ d_hidden + 2 * l2 * w1, d_hidden.sum(0), hidden.T @ d_logits + 2 * l2 * w2, d_logits.sum(0)]


def _ascent(params, gradient, rho, *, adaptive: bool = False, eta: float = 0.01) -> list[np.ndarray]:
  """Foret et al. eq. 2: rho g / ||g||; Kwon et al. Alg. 1: rho T^2 g / ||T g||, T = |w| + eta on
  kernels (index 0 and 2) and 1 on biases."""
  scales = [np.abs(w) + eta if adaptive and index % 2 == 0 else np.ones_like(w)
            for index, w in enumerate(params)]
  norm = np.sqrt(sum(np.sum((t * g) ** 2) for t, g in zip(scales, gradient)))
  return [rho * t * t * g / norm for t, g in zip(scales, gradient)]


class Sgd:
  """Keras SGD with momentum: m <- momentum * m - lr * g; w <- w + m."""

  def __init__(self, momentum: float = 0.9):
    self.momentum, self.slots = momentum, None

  def __call__(self, params, gradient):
    self.slots = self.slots or [np.zeros_like(w) for w in params]
    self.slots = [self.momentum * m - LEARNING_RATE * g for m, g in zip(self.slots, gradient)]
    return [w + m for w, m in zip(params, self.slots)]


class Adam:
  """Keras Adam: epsilon added to sqrt(v) before bias correction (docs/REGULARIZATION.md)."""

  def __init__(self, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    self.beta_1, self.beta_2, self.epsilon, self.t, self.m, self.v = beta_1, beta_2, epsilon, 0, None, None

  def __call__(self, params, gradient):
    self.t += 1
    self.m = [self.beta_1 * m + (1 - self.beta_1) * g for m, g in zip(self.m or [0] * 4, gradient)]
    self.v = [self.beta_2 * v + (1 - self.beta_2) * g * g for v, g in zip(self.v or [0] * 4, gradient)]
    rate = LEARNING_RATE * np.sqrt(1 - self.beta_2**self.t) / (1 - self.beta_1**self.t)
    return [w - rate * m / (np.sqrt(v) + self.epsilon) for w, m, v in zip(params, self.m, self.v)]


def _reference_sam(params, features, labels, optimizer, *, rho, adaptive=False, l2=0.0, decay=0.0,
                   prox=0.0) -> list[np.ndarray]:
  """STEPS SAM steps in the order docs/REGULARIZATION.md states: ascent from the gradient of the
  whole objective, its gradient at w + e, then decay on w, the optimizer step, and the prox."""
  for x, y in zip(features.astype(np.float64), labels):
    gradient = _gradient(params, x, y, l2=l2)
    perturbed = [w + e for w, e in zip(params, _ascent(params, gradient, rho, adaptive=adaptive))]
    gradient = _gradient(perturbed, x, y, l2=l2)
    params = [w * (1 - LEARNING_RATE * decay) if index % 2 == 0 else w for index, w in enumerate(params)]
    params = optimizer(params, gradient)
    params = [np.sign(w) * np.maximum(np.abs(w) - LEARNING_RATE * prox, 0) if index % 2 == 0 else w
              for index, w in enumerate(params)]
  return params


# ----- the tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("adaptive, rho", [(False, 0.05), (True, 0.5)], ids=["SAM", "ASAM"])
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_steps_equal_the_papers_update_around_sgd_and_adam(optimizer, adaptive, rho):
  features, labels = _data()
  model = _model()
  reference = _reference_sam(_weights(model), features, labels, Sgd() if optimizer == "SGD" else Adam(),
                             rho=rho, adaptive=adaptive)
  keras_optimizer = ((lambda learning_rate: tf.keras.optimizers.SGD(learning_rate, momentum=0.9))
                     if optimizer == "SGD" else tf.keras.optimizers.Adam)
  _train(_program(model, keras_optimizer, [SAM(rho, adaptive=adaptive)]), features, labels)
  for got, expected in zip(_weights(model), reference):
    np.testing.assert_allclose(got, expected, atol=TOLERANCE[optimizer], rtol=0)


def test_composes_with_l2_decoupled_decay_and_proximal_l1_in_the_stated_order():
  """Ascent and descent gradients include L2 (a loss term); decay acts on the restored w before the
  optimizer step and the prox after it."""
  features, labels = _data(seed=2)
  model = _model()
  reference = _reference_sam(_weights(model), features, labels, Sgd(), rho=0.05, l2=1e-2, decay=0.5,
                             prox=1e-2)
  regularizers = [terms.L2(1e-2), SAM(0.05), terms.DecoupledWeightDecay(0.5), terms.ProximalL1(1e-2)]
  _train(_program(model, lambda learning_rate: tf.keras.optimizers.SGD(learning_rate, momentum=0.9),
                  regularizers), features, labels)
  for got, expected in zip(_weights(model), reference):
    np.testing.assert_allclose(got, expected, atol=TOLERANCE["SGD"], rtol=0)


@pytest.mark.parametrize("perturbation", ["global", "per_replica"])
def test_two_replicas_ascend_along_the_all_reduced_or_their_own_gradient(perturbation):
  """'global' is the single-device update (replica-invariant); 'per_replica' ascends each replica along
  its own half of the batch (m-sharpness) and the optimizer averages the two perturbed gradients."""
  features, labels = _data(seed=3)
  model_single = _model()
  params = _weights(model_single)
  optimizer, rho = Sgd(), 0.05
  for x, y in zip(features.astype(np.float64), labels):
    shards = [(x, y)] if perturbation == "global" else [(x[:BATCH // 2], y[:BATCH // 2]),
                                                          (x[BATCH // 2:], y[BATCH // 2:])]
    gradients = []
    for x_shard, y_shard in shards:
      ascent = _ascent(params, _gradient(params, x_shard, y_shard), rho)
      gradients.append(_gradient([w + e for w, e in zip(params, ascent)], x_shard, y_shard))
    params = optimizer(params, [np.mean(parts, axis=0) for parts in zip(*gradients)])
  strategy = mirrored(2)
  with strategy.scope():
    model = _model()
  program = _program(model, lambda learning_rate: tf.keras.optimizers.SGD(learning_rate, momentum=0.9),
                     [SAM(rho, perturbation=perturbation)], strategy=strategy)
  _train(program, features, labels, strategy=strategy)
  for got, expected in zip(_weights(model), params):
    np.testing.assert_allclose(got, expected, atol=TOLERANCE["SGD"], rtol=0)


@pytest.mark.parametrize("rho, learning_rate", [(1e-30, LEARNING_RATE), (0.5, 0.0)],
                         ids=["vanishing-rho", "zero-learning-rate"])
def test_the_perturbed_pass_leaves_no_trace_in_weights_batch_norm_or_dropout_state(rho, learning_rate):
  """Every model variable (weights, BatchNorm statistics, Keras 3's dropout RNG state) equals the plain
  step's bit for bit: with a vanishing rho SAM's gradient is the plain one (the second pass sees the same
  dropout masks), and at learning rate 0 the weights come back exactly from w + e."""
  features, labels = _data(seed=4)
  dropout = 0.3 if compat.IS_KERAS_3 else 0.0  # Keras 2 draws masks from stateful ops (tests/helpers.py)
  results = []
  for regularizers in ([], [SAM(rho)]):
    model = _model(batch_norm=True, dropout=dropout)
    _train(_program(model, tf.keras.optimizers.SGD, regularizers, learning_rate=learning_rate),
           features, labels)
    results.append([v.numpy() for v in model.variables])
  assert len(results[0]) >= 6 + compat.IS_KERAS_3  # kernels, biases, BatchNorm (4), the RNG state
  for got, expected in zip(*results):
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow  # XLA compilation, ~7 s
def test_sam_and_mixup_compile_with_xla_and_match_the_graph_step():
  """TPU proxy: the whole replica step with SAM's two passes, its restore of BatchNorm's statistics and
  Mixup's stateless draws (not `stateless_gamma`, which XLA lacks) compiles with XLA and trains as the
  step without XLA does: the same pairs, lams within float32 rounding."""
  features, labels = _data(seed=5)
  results = []
  for jit_compile in (False, True):
    model = _model(batch_norm=True)
    _train(_program(model, tf.keras.optimizers.SGD, [SAM(0.05), mixing.Mixup(0.4)], jit_compile=jit_compile),
           features, labels)
    results.append(_weights(model))
  for got, expected in zip(*results):
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


# ----- ASAM's scaled parameters: Occam's 'kernels' and the reference code's 'weight' names ----------

def _reference_asam_ascent(named: dict, gradients: dict, rho: float, eta: float) -> dict:
  """ASAM's reference ascent step (Kwon et al. 2021, official PyTorch code), in numpy float64: every
  parameter whose name contains 'weight' gets `T = |w| + eta`; its gradient is multiplied by T, the norm
  is taken over all (scaled and unscaled) gradients, and `e = rho * T * (T g) / norm`."""
  scaled = {name: (np.abs(w) + eta if "weight" in name else 1.0) for name, w in named.items()}
  norm = np.sqrt(sum(np.sum((scaled[name] * gradients[name]) ** 2) for name in named)) + 1e-16
  return {name: rho * scaled[name] * scaled[name] * gradients[name] / norm for name in named}


def _norm_model() -> tuple[tf.keras.Model, list[str]]:
  """Dense -> BatchNorm -> PReLU -> Dense -> LayerNorm -> Dense, with each trainable variable's PyTorch
  name (`torch.nn` names a kernel, a normalization scale and a PReLU slope `weight`, a bias and an
  offset `bias`)."""
  tf.keras.utils.set_random_seed(2)
  inputs = tf.keras.Input((4,))
  x = tf.keras.layers.Dense(5)(inputs)
  x = tf.keras.layers.BatchNormalization()(x)
  x = tf.keras.layers.PReLU()(x)
  x = tf.keras.layers.Dense(6)(x)
  x = tf.keras.layers.LayerNormalization()(x)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))
  names = ["fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "prelu.weight", "fc2.weight", "fc2.bias",
           "ln.weight", "ln.bias", "head.weight", "head.bias"]
  assert [tuple(v.shape) for v in model.trainable_variables] == [
      (4, 5), (5,), (5,), (5,), (5,), (5, 6), (6,), (6,), (6,), (6, 3), (3,)]
  rng = np.random.default_rng(3)
  for variable in model.trainable_variables:  # scales away from 1 and offsets away from 0
    variable.assign(rng.normal(size=variable.shape).astype(np.float32))
  return model, names


@pytest.mark.parametrize("scaled", ["kernels", "reference"])
def test_asam_scales_kernels_or_every_parameter_the_reference_code_names_weight(scaled):
  """'reference' equals the reference code's name rule on a model with BatchNorm, LayerNorm and PReLU;
  'kernels' equals the same formula with only the kernels named 'weight'. float32 against float64:
  relative 1e-5."""
  model, names = _norm_model()
  term = SAM(0.5, adaptive=True, eta=0.01, scaled=scaled)
  term.bind(model)
  rng = np.random.default_rng(4)
  gradients = [rng.normal(size=v.shape).astype(np.float32) for v in model.trainable_variables]
  got = term.ascent([tf.constant(v.numpy()) for v in model.trainable_variables],
                    [tf.constant(g) for g in gradients])
  if scaled == "kernels":
    names = [name if name.startswith(("fc", "head")) else name.replace("weight", "scale") for name in names]
  weights = dict(zip(names, _weights(model)))
  expected = _reference_asam_ascent(weights, dict(zip(names, [g.astype(np.float64) for g in gradients])),
                                    rho=0.5, eta=0.01)
  for name, e in zip(names, got):
    np.testing.assert_allclose(e.numpy(), expected[name], rtol=1e-5, atol=1e-9, err_msg=name)


def test_unknown_scaled_is_refused_naming_the_term():
  with pytest.raises(ValueError, match=r"asam: unknown scaled 'all'; valid values are \['kernels', "):
    SAM(0.5, adaptive=True, scaled="all", name="asam")
