"""Tests for `trainer.regularizers`: penalties, update rules, Keras AdamW parity, distribution.

References are independent: numpy re-implementations of the update rules, the closed forms and
vectors of docs/REGULARIZATION.md ("Test vectors"), and the Keras optimizers' own `weight_decay`.
Tolerances are absolute unless said otherwise.
"""

from __future__ import annotations

import gin
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from trainer.regularization import selectors
from trainer.regularization import terms as regularizers
from trainer.runtime import compat

layers = tf.keras.layers

# Test vectors of docs/REGULARIZATION.md, "Test vectors".
W0 = np.array([1.0, -2.0, 0.5])
G = np.array([0.1, 0.2, -0.3])
LR = 0.1
WD = 0.01
TINY_EPSILON = 1e-12  # eps -> 0: every Adam step is exactly lr * sign(g), so closed forms hold.
# Adam betas exact in float32 and in `1 - beta`. Keras computes beta**t from the float32 beta and
# `1 - beta` in float64: with beta_2 = 0.999 the two disagree by 1.3e-5 relative, which shrinks
# every Adam step by 6.4e-6 relative (2e-6 absolute after 3 steps here), too much for 1e-6.
# The closed forms of docs/REGULARIZATION.md (each step exactly lr * sign(g) as eps -> 0) hold for
# any betas.
BETA_1, BETA_2 = 1 - 2.0**-3, 1 - 2.0**-9
MOMENTUM = 0.9


# ---------------------------------------------------------------------------------------------
# Helpers: a one-kernel model, a trainer-like step, and numpy references of the optimizers.


def _kernel_model(w0: np.ndarray, bias: float = 1.0) -> tf.keras.Model:
  """Dense(1) whose (3, 1) kernel is `w0` and whose bias is `bias` (excluded by default)."""
  model = tf.keras.Sequential([tf.keras.Input((len(w0),)), layers.Dense(1, name="k")])
  model.layers[0].set_weights([w0.reshape(-1, 1), np.array([bias])])
  return model


def _kernel(model) -> np.ndarray:
  return model.layers[0].kernel.numpy().ravel()


def _optimizer(kind: str, learning_rate, epsilon: float = TINY_EPSILON):
  if kind == "sgd":
    return tf.keras.optimizers.SGD(learning_rate)
  if kind == "momentum":
    return tf.keras.optimizers.SGD(learning_rate, momentum=0.9)
  return tf.keras.optimizers.Adam(learning_rate, beta_1=BETA_1, beta_2=BETA_2, epsilon=epsilon)


def _current_lr(learning_rate, optimizer) -> tf.Tensor:
  """lr_t as the Keras optimizers use it for the coming step: schedule(iterations)."""
  if callable(learning_rate):
    return tf.cast(learning_rate(optimizer.iterations), tf.float32)
  return tf.constant(learning_rate, tf.float32)


def _step_fn(model, optimizer, terms, learning_rate, base_lr, loss_fn):
  """What the Trainer does per step: loss + penalties in the tape, then update terms around
  `apply_gradients`. Returns a replica function (no arguments)."""
  loss_terms = [t for t in terms if isinstance(t, regularizers.LossTerm)]
  update_terms = [t for t in terms if isinstance(t, regularizers.UpdateTerm)]
  variables = model.trainable_variables

  def step():
    with tf.GradientTape() as tape:
      loss = loss_fn(model)
      for term in loss_terms:
        loss += term.penalty()
    grads = tape.gradient(loss, variables)
    lr = _current_lr(learning_rate, optimizer)
    for term in update_terms:
      term.before_step(lr, base_lr)
    optimizer.apply_gradients(zip(grads, variables))
    for term in update_terms:
      term.after_step(lr, base_lr)

  return step


def _train(model, optimizer, terms, steps: int, learning_rate, loss_fn):
  for term in terms:
    term.bind(model)
  compat.build_optimizer(optimizer, model.trainable_variables)
  step = tf.function(
      _step_fn(model, optimizer, terms, learning_rate, _lr_at(learning_rate, 0), loss_fn))
  for _ in range(steps):
    step()


def _fixed_gradient_loss(g: np.ndarray):
  """A loss whose kernel gradient is exactly `g` and whose bias gradient is 0."""
  g = tf.constant(g.reshape(-1, 1), tf.float32)
  def loss(model):
    dense = model.layers[0]
    return tf.reduce_sum(dense.kernel * g) + 0.0 * dense.bias[0]
  return loss


def _lr_at(learning_rate, step: int) -> float:
  return float(learning_rate(step)) if callable(learning_rate) else learning_rate


def _numpy_trajectory(w0, g, kind, steps, learning_rate, decay=None, rate=0.0, l2=0.0, prox=0.0,
                      epsilon=TINY_EPSILON):
  """Independent float64 re-implementation: decay on w_{t-1}, optimizer step, then prox.

  Optimizer rules as Keras (2 and 3) implement them: SGD `w -= lr g`; momentum `m = 0.9 m - lr g;
  w += m`; Adam `alpha = lr sqrt(1-b2^t)/(1-b1^t); w -= alpha m / (sqrt(v) + eps)`.
  """
  w, m, v = w0.astype(np.float64), np.zeros_like(w0), np.zeros_like(w0)
  base_lr = _lr_at(learning_rate, 0)
  for t in range(steps):
    lr = _lr_at(learning_rate, t)
    grad = g + 2 * l2 * w
    if decay == "lr_coupled":
      w = w - lr * rate * w
    elif decay == "schedule_multiplier":
      w = w - lr / base_lr * rate * w
    if kind == "sgd":
      w = w - lr * grad
    elif kind == "momentum":
      m = MOMENTUM * m - lr * grad
      w = w + m
    else:
      m = BETA_1 * m + (1 - BETA_1) * grad
      v = BETA_2 * v + (1 - BETA_2) * grad**2
      alpha = lr * np.sqrt(1 - BETA_2**(t + 1)) / (1 - BETA_1**(t + 1))
      w = w - alpha * m / (np.sqrt(v) + epsilon)
    if prox:
      w = np.sign(w) * np.maximum(np.abs(w) - lr * prox, 0.0)
  return w


def _schedule():
  return tf.keras.optimizers.schedules.ExponentialDecay(LR, decay_steps=1, decay_rate=0.5)


def _data(seed: int = 0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, size=32))


def _mlp(seed: int = 0) -> tf.keras.Model:
  tf.keras.utils.set_random_seed(seed)
  return tf.keras.Sequential([
      tf.keras.Input((4,)), layers.Dense(8, activation="tanh", name="hidden"),
      layers.LayerNormalization(name="ln"), layers.Dense(3, name="out")])


def _cross_entropy(x, y):
  loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  return lambda model: loss(y, model(x, training=True))


def _weights(model) -> list[np.ndarray]:
  return [v.numpy() for v in model.trainable_variables]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------
# Penalties.


def _conv_model() -> tf.keras.Model:
  tf.keras.utils.set_random_seed(1)
  return tf.keras.Sequential([
      tf.keras.Input((5, 5, 2)), layers.Conv2D(3, 3, name="conv"),
      layers.BatchNormalization(name="bn", beta_initializer="ones"),
      layers.LayerNormalization(name="ln", beta_initializer="ones"), layers.Flatten(name="flat"),
      layers.Dense(2, name="head", bias_initializer="ones")])


@pytest.mark.parametrize("term_class, value_fn, grad_fn", [
    (regularizers.L2, lambda w: np.sum(w**2), lambda w: 2 * w),
    (regularizers.L1, lambda w: np.sum(np.abs(w)), np.sign),
], ids=["l2", "l1"])
def test_penalty_value_and_gradient_equal_numpy(term_class, value_fn, grad_fn):
  model = _conv_model()
  term = term_class(0.3, selector=selectors.VariableSelector(layer_scales={"head": 0.5}))
  term.bind(model)
  multipliers = {id(s.variable): s.multiplier for s in term.selected}
  assert sorted(multipliers.values()) == [0.5, 1.0]  # conv/kernel x1, head/kernel x0.5
  with tf.GradientTape() as tape:
    penalty = term.penalty()
  grads = tape.gradient(penalty, model.trainable_variables)
  assert penalty.dtype == tf.float32 and penalty.shape == ()
  expected = sum(0.3 * s.multiplier * value_fn(s.variable.numpy()) for s in term.selected)
  np.testing.assert_allclose(penalty.numpy(), expected, rtol=1e-6)
  for variable, grad in zip(model.trainable_variables, grads):
    if id(variable) in multipliers:
      np.testing.assert_allclose(
          grad.numpy(), 0.3 * multipliers[id(variable)] * grad_fn(variable.numpy()), rtol=1e-6)
    else:  # biases, BN and LN parameters: no penalty gradient at all.
      assert grad is None, compat.variable_path(variable)


def test_penalty_of_bfloat16_variables_is_float32():
  model = tf.keras.Sequential([tf.keras.Input((3,)), layers.Dense(2, dtype="bfloat16")])
  term = regularizers.L2(1.0)
  term.bind(model)
  kernel = model.layers[0].kernel
  assert kernel.dtype == tf.bfloat16
  expected = np.sum(tf.cast(kernel, tf.float32).numpy() ** 2)
  assert term.penalty().dtype == tf.float32
  np.testing.assert_allclose(term.penalty().numpy(), expected, rtol=1e-6)
  decay = regularizers.DecoupledWeightDecay(0.5)
  decay.bind(model)
  decay.before_step(tf.constant(1.0), 1.0)
  assert kernel.dtype == tf.bfloat16


def test_mixed_precision_variables_are_penalized_and_decayed():
  # Keras 2 wraps these in AutoCastVariable, Keras 3 in a float32 Variable with a float16 policy.
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = tf.keras.Sequential(
        [tf.keras.Input((3,)), layers.Dense(2, kernel_initializer="ones")])
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  penalty, decay = regularizers.L2(1.0), regularizers.DecoupledWeightDecay(0.5)
  penalty.bind(model)
  decay.bind(model)
  tf.function(lambda: decay.before_step(tf.constant(0.1), 0.1))()
  np.testing.assert_allclose(model.layers[0].kernel.numpy(), np.full((3, 2), 0.95), atol=1e-7)
  np.testing.assert_allclose(penalty.penalty().numpy(), 6 * 0.95**2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Update rules against numpy, and the closed forms of docs/REGULARIZATION.md, "Test vectors".


_UPDATE_CASES = {
    "lr_coupled": (lambda: regularizers.DecoupledWeightDecay(0.3),
                   dict(decay="lr_coupled", rate=0.3)),
    "schedule_multiplier": (
        lambda: regularizers.DecoupledWeightDecay(0.03, convention="schedule_multiplier"),
        dict(decay="schedule_multiplier", rate=0.03)),
    "prox": (lambda: regularizers.ProximalL1(0.5), dict(prox=0.5)),
    "l2": (lambda: regularizers.L2(0.2), dict(l2=0.2)),
}


@pytest.mark.parametrize("schedule", [False, True], ids=["constant_lr", "schedule"])
@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("case", sorted(_UPDATE_CASES))
def test_term_with_optimizer_equals_numpy(case, kind, schedule):
  make_term, reference = _UPDATE_CASES[case]
  learning_rate = _schedule() if schedule else LR
  w0 = np.array([1.0, -2.0, 0.05])  # 0.05 crosses zero under prox
  model = _kernel_model(w0)
  _train(model, _optimizer(kind, learning_rate), [make_term()], 3, learning_rate,
         _fixed_gradient_loss(G))
  expected = _numpy_trajectory(w0, G, kind, 3, learning_rate, **reference)
  np.testing.assert_allclose(_kernel(model), expected, atol=1e-6)
  assert model.layers[0].bias.numpy()[0] == 1.0  # excluded bias: zero gradient, no decay/prox


@pytest.mark.parametrize("term, steps, expected", [
    (lambda: regularizers.DecoupledWeightDecay(WD), 1, [0.899, -2.098, 0.5995]),
    (lambda: regularizers.DecoupledWeightDecay(WD), 3, [0.6973029, -2.2937061, 0.7982016]),
    (lambda: regularizers.DecoupledWeightDecay(WD, convention="schedule_multiplier"), 1,
     [0.89, -2.08, 0.595]),
    (lambda: regularizers.DecoupledWeightDecay(WD, convention="schedule_multiplier"), 3,
     [0.673289, -2.237608, 0.7821595]),
    (lambda: regularizers.L2(WD / 2), 1, [0.9, -2.1, 0.6]),  # coupled L2: grad += wd * w
], ids=["lr_coupled_1", "lr_coupled_3", "paper_1", "paper_3", "adam_l2_1"])
def test_adam_reference_closed_forms(term, steps, expected):
  model = _kernel_model(W0)
  _train(model, _optimizer("adam", LR), [term()], steps, LR, _fixed_gradient_loss(G))
  np.testing.assert_allclose(_kernel(model), expected, atol=1e-6)


@pytest.mark.parametrize("term, expected", [
    (lambda: regularizers.DecoupledWeightDecay(WD), [0.969011, -2.053982, 0.5859705]),
    (lambda: regularizers.L2(WD / 2), [0.968111, -2.052182, 0.5855205]),
], ids=["decoupled", "l2"])
def test_sgd_momentum_reference_two_steps(term, expected):
  model = _kernel_model(W0)
  _train(model, _optimizer("momentum", LR), [term()], 2, LR, _fixed_gradient_loss(G))
  np.testing.assert_allclose(_kernel(model), expected, atol=1e-6)


def test_proximal_l1_reference_vector_gives_exact_zero():
  model = _kernel_model(np.array([0.5, -0.05, 0.02]))
  _train(model, _optimizer("sgd", 0.1), [regularizers.ProximalL1(0.5)], 1, 0.1,
         _fixed_gradient_loss(np.array([0.1, 0.1, -0.1])))
  np.testing.assert_allclose(_kernel(model), [0.44, -0.01, 0.0], atol=1e-6)
  assert _kernel(model)[2] == 0.0


def test_layer_scales_multiply_the_decay():
  model = _kernel_model(W0)
  term = regularizers.DecoupledWeightDecay(0.5, selector=selectors.VariableSelector(
      layer_scales={"k": 0.5}))
  _train(model, _optimizer("sgd", LR), [term], 1, LR, _fixed_gradient_loss(np.zeros(3)))
  np.testing.assert_allclose(_kernel(model), W0 * (1 - LR * 0.5 * 0.5), atol=1e-7)


def test_effective_decay_per_convention():
  lr = tf.constant(0.05)
  np.testing.assert_allclose(regularizers.DecoupledWeightDecay(0.2).effective_decay(lr, 0.1),
                             0.01, rtol=1e-6)
  np.testing.assert_allclose(regularizers.DecoupledWeightDecay(
      0.2, convention="schedule_multiplier").effective_decay(lr, 0.1), 0.1, rtol=1e-6)
  assert regularizers.ProximalL1(0.2).effective_decay(lr, 0.1).numpy() == 0.0


# ---------------------------------------------------------------------------------------------
# Equivalences and differences on a real model with real gradients.


@pytest.mark.parametrize("schedule", [False, True], ids=["constant_lr", "schedule"])
def test_lr_coupled_decay_with_adam_equals_keras_adamw(schedule):
  learning_rate = (tf.keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5) if schedule
                   else 0.01)
  x, y = _data()
  ours, keras_model = _mlp(), _mlp()
  _train(ours, tf.keras.optimizers.Adam(learning_rate),
         [regularizers.DecoupledWeightDecay(0.1)], 50, learning_rate, _cross_entropy(x, y))
  adamw = tf.keras.optimizers.AdamW(learning_rate, weight_decay=0.1)
  adamw.exclude_from_weight_decay(var_list=selectors.excluded_variables(keras_model))
  _train(keras_model, adamw, [], 50, learning_rate, _cross_entropy(x, y))
  assert _max_diff(_weights(ours), _weights(keras_model)) <= 1e-6
  assert _max_diff(_weights(ours), _weights(_mlp())) > 1e-2  # it trained


def test_sgd_l2_equals_sgd_lr_coupled_decay_of_twice_the_scale():
  x, y = _data()
  with_l2, with_decay = _mlp(), _mlp()
  _train(with_l2, _optimizer("sgd", 0.1), [regularizers.L2(0.05)], 20, 0.1, _cross_entropy(x, y))
  _train(with_decay, _optimizer("sgd", 0.1), [regularizers.DecoupledWeightDecay(0.1)], 20, 0.1,
         _cross_entropy(x, y))
  assert _max_diff(_weights(with_l2), _weights(with_decay)) <= 1e-6


def test_adam_l2_and_adam_decoupled_decay_differ():
  x, y = _data()
  with_l2, with_decay = _mlp(), _mlp()
  _train(with_l2, _optimizer("adam", 0.01, epsilon=1e-7), [regularizers.L2(0.05)], 20, 0.01,
         _cross_entropy(x, y))
  _train(with_decay, _optimizer("adam", 0.01, epsilon=1e-7),
         [regularizers.DecoupledWeightDecay(0.1)], 20, 0.01, _cross_entropy(x, y))
  assert _max_diff(_weights(with_l2), _weights(with_decay)) > 1e-3


# ---------------------------------------------------------------------------------------------
# Distribution: exactly once per step under MirroredStrategy, and in cross-replica context.


@pytest.mark.parametrize("make_term", [
    lambda: regularizers.DecoupledWeightDecay(0.3),
    lambda: regularizers.DecoupledWeightDecay(0.03, convention="schedule_multiplier"),
    lambda: regularizers.ProximalL1(0.5),
], ids=["lr_coupled", "schedule_multiplier", "prox"])
def test_mirrored_strategy_applies_updates_exactly_once(make_term):
  w0 = np.array([1.0, -2.0, 0.05])
  strategy = mirrored(2)
  with strategy.scope():
    model = _kernel_model(w0)
    optimizer = _optimizer("momentum", LR)
    term = make_term()
    term.bind(model)
    compat.build_optimizer(optimizer, model.trainable_variables)
  # Gradients are summed over replicas: each replica contributes G / replicas.
  loss_fn = _fixed_gradient_loss(G / strategy.num_replicas_in_sync)
  step = _step_fn(model, optimizer, [term], LR, LR, loss_fn)

  @tf.function
  def run():
    for _ in tf.range(3):
      strategy.run(step)

  run()
  single_device = _kernel_model(w0)
  _train(single_device, _optimizer("momentum", LR), [make_term()], 3, LR, _fixed_gradient_loss(G))
  for component in compat.tf_variable(model.layers[0].kernel).values:
    np.testing.assert_allclose(component.numpy().ravel(), _kernel(single_device), atol=1e-6)


def test_update_in_cross_replica_context():
  strategy = mirrored(2)
  with strategy.scope():
    model = _kernel_model(W0)
    term = regularizers.DecoupledWeightDecay(0.5)
    term.bind(model)
    tf.function(lambda: term.before_step(tf.constant(0.1), 0.1))()
  for component in compat.tf_variable(model.layers[0].kernel).values:
    np.testing.assert_allclose(component.numpy().ravel(), W0 * 0.95, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Layer regularizer overlap, description, normalized rate, gin.


def test_overlap_warning_names_term_and_doubly_regularized_variable():
  model = tf.keras.Sequential([
      tf.keras.Input((3,)), layers.Dense(4, name="plain"),
      layers.Dense(2, name="reg", kernel_regularizer="l2")])
  assert [compat.variable_path(v) for v in regularizers.layer_regularized_variables(model)] == [
      compat.variable_path(model.layers[1].kernel)]
  l2, decay = regularizers.L2(0.1), regularizers.DecoupledWeightDecay(0.1)
  l2.bind(model)  # decay left unbound: the warning resolves its selection itself
  warning = regularizers.overlap_warning([l2, decay], model)
  assert warning.startswith("variables regularized twice")
  assert "  l2: " in warning and "  weight_decay: " in warning
  assert "reg/kernel" in warning and "plain/kernel" not in warning
  assert regularizers.overlap_warning([l2], _kernel_model(W0)) is None


def test_describe_names_settings_and_coverage():
  term = regularizers.DecoupledWeightDecay(0.1, convention="schedule_multiplier", name="wd")
  assert term.describe() == ("wd: DecoupledWeightDecay(rate=0.1, convention='schedule_multiplier'),"
                             " not bound to a model")
  term.bind(_kernel_model(W0))
  text = term.describe()
  assert text.startswith("wd: DecoupledWeightDecay(rate=0.1, convention='schedule_multiplier') on "
                         "1 variables, 3 parameters:")
  assert "k/kernel (3, 1) x1" in text


def test_normalized_decay_rate_and_gin_binding():
  assert regularizers.normalized_decay_rate(0.05, 128, 50_000, 100) == pytest.approx(
      0.05 * np.sqrt(128 / 5_000_000), rel=1e-12)
  gin.clear_config()
  try:
    gin.parse_config("""
        DecoupledWeightDecay.rate = @normalized_decay_rate()
        normalized_decay_rate.rate_norm = 0.05
        normalized_decay_rate.batch_size = 100
        normalized_decay_rate.num_examples = 1000
        normalized_decay_rate.epochs = 10
    """)
    assert regularizers.DecoupledWeightDecay().rate == pytest.approx(0.005, rel=1e-12)
  finally:
    gin.clear_config()


# ---------------------------------------------------------------------------------------------
# Bad inputs.


@pytest.mark.parametrize("make, message", [
    (lambda: regularizers.L2(-1.0), r"^l2: scale must be a finite number >= 0, got -1.0"),
    (lambda: regularizers.L1(float("nan")), r"^l1: scale must be a finite number >= 0, got nan"),
    (lambda: regularizers.ProximalL1(float("inf"), name="p"),
     r"^p: scale must be a finite number >= 0, got inf"),
    (lambda: regularizers.DecoupledWeightDecay(-0.1),
     r"^weight_decay: rate must be a finite number >= 0, got -0.1"),
    (lambda: regularizers.DecoupledWeightDecay(0.1, convention="tfa"),
     r"^weight_decay: unknown convention 'tfa'; valid conventions are "
     r"\['lr_coupled', 'schedule_multiplier'\]"),
    (lambda: regularizers.L2("0.1"), r"^l2: scale must be a finite number >= 0, got '0.1'"),
    (lambda: regularizers.normalized_decay_rate(0.05, 0, 100, 1),
     r"^normalized_decay_rate: batch_size must be > 0, got 0"),
    (lambda: regularizers.normalized_decay_rate(-0.05, 10, 100, 1),
     r"^normalized_decay_rate: rate_norm must be a finite number >= 0, got -0.05"),
    (lambda: regularizers.DecoupledWeightDecay(0.1, convention="schedule_multiplier")
     .effective_decay(tf.constant(0.1), 0.0),
     r"^weight_decay: base_learning_rate must be > 0, got 0.0"),
])
def test_bad_inputs_raise_value_error_naming_term_and_value(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_empty_selection_fails_at_bind():
  term = regularizers.L2(0.1, selector=selectors.VariableSelector(exclude=["kernel"]))
  with pytest.raises(ValueError, match="selector matched no variables"):
    term.bind(_kernel_model(W0))


def test_using_an_unbound_term_is_an_error():
  with pytest.raises(RuntimeError, match=r"^l2: call bind\(model\) before using the term$"):
    regularizers.L2(0.1).penalty()
