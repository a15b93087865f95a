"""Tests for trainer/sharpness.py against explicit Hessians, closed forms and a numpy MLP.

Model: a 4-6-3 tanh MLP (51 parameters) on a fixed random batch of 32, softmax cross entropy.
Explicit Hessians come from a nested tape + `tape.jacobian` over one flat parameter vector (a
different code path from the HVP under test); SAM references from a float64 numpy forward/backward.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.metrics import sharpness

SHAPES = [(4, 6), (6,), (6, 3), (3,)]
BATCH = 32
MODES = ["eager", "tf_function"]


def _run(mode: str, fn):
  """Calls `fn()` eagerly or as a fresh `tf.function`."""
  return fn() if mode == "eager" else tf.function(fn)()


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, 4)).astype(np.float32)
  labels = rng.integers(0, 3, size=BATCH)
  return x, labels


def _initial_params() -> list[np.ndarray]:
  rng = np.random.default_rng(1)
  return [(rng.normal(size=s) * 0.7).astype(np.float32) for s in SHAPES]


def _tf_loss(params, x, labels) -> tf.Tensor:
  w1, b1, w2, b2 = params
  logits = tf.tanh(x @ w1 + b1) @ w2 + b2
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def _mlp(params):
  """(variables, loss_fn) for the MLP with the given parameter values."""
  x, labels = _data()
  variables = [tf.Variable(p) for p in params]
  return variables, lambda: _tf_loss(variables, x, labels)


def _explicit_hessian(params) -> np.ndarray:
  """The full Hessian over all parameters flattened in order (float64 copy, symmetrized)."""
  x, labels = _data()
  flat = tf.constant(np.concatenate([p.ravel() for p in params]))
  sizes = [int(np.prod(s)) for s in SHAPES]
  with tf.GradientTape() as outer:
    outer.watch(flat)
    with tf.GradientTape() as inner:
      inner.watch(flat)
      pieces = tf.split(flat, sizes)
      loss = _tf_loss([tf.reshape(p, s) for p, s in zip(pieces, SHAPES)], x, labels)
    grad = inner.gradient(loss, flat)
  hessian = outer.jacobian(grad, flat).numpy().astype(np.float64)
  return 0.5 * (hessian + hessian.T)


@pytest.fixture(scope="module")
def trained_params() -> list[np.ndarray]:
  """MLP parameters after 400 full-batch gradient steps (lr 0.5): near a minimum, Hessian ~PSD."""
  variables, loss_fn = _mlp(_initial_params())

  @tf.function
  def train():
    for _ in tf.range(400):
      with tf.GradientTape() as tape:
        loss = loss_fn()
      for v, g in zip(variables, tape.gradient(loss, variables)):
        v.assign_sub(0.5 * g)

  train()
  return [v.numpy() for v in variables]


# --- Hessian-vector products -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_hvp_equals_explicit_hessian_times_vector(mode):
  params = _initial_params()
  variables, loss_fn = _mlp(params)
  rng = np.random.default_rng(2)
  vector = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
  hvp = _run(mode, lambda: sharpness.hessian_vector_product(
      loss_fn, variables, [tf.constant(u) for u in vector]))
  expected = _explicit_hessian(params) @ np.concatenate([u.ravel() for u in vector])
  got = np.concatenate([h.numpy().ravel() for h in hvp])
  assert [h.shape for h in hvp] == [tuple(s) for s in SHAPES]
  assert all(h.dtype == tf.float32 for h in hvp)
  np.testing.assert_allclose(np.linalg.norm(got - expected) / np.linalg.norm(expected), 0,
                             atol=1e-5)


def test_hvp_of_unused_variable_is_zero():
  variables, loss_fn = _mlp(_initial_params())
  unused = tf.Variable([1.0, 2.0])
  hvp = sharpness.hessian_vector_product(
      loss_fn, variables + [unused], [tf.ones(s) for s in SHAPES] + [tf.ones([2])])
  np.testing.assert_array_equal(hvp[-1].numpy(), [0.0, 0.0])


# --- Top eigenvalue ----------------------------------------------------------------------------


def _quadratic(eigenvalues):
  """(variables, loss_fn) for 0.5 w^T A w, A = Q diag(eigenvalues) Q^T, w split in 2 variables."""
  n = len(eigenvalues)
  q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(n, n)))
  a = tf.constant((q * np.asarray(eigenvalues)) @ q.T, tf.float32)
  variables = [tf.Variable(tf.ones([2, 2])), tf.Variable(tf.fill([n - 4], 0.5))]

  def loss_fn():
    w = tf.concat([tf.reshape(variables[0], [-1]), variables[1]], 0)
    return 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1)

  return variables, loss_fn


@pytest.mark.parametrize("mode", MODES)
def test_top_eigenvalue_of_quadratic_is_closed_form(mode):
  variables, loss_fn = _quadratic([5.0, 2.0, 1.0, 0.5, -1.0, 0.0])
  estimate, iterations = _run(mode, lambda: sharpness.hessian_top_eigenvalue(
      loss_fn, variables, max_iterations=50, tolerance=1e-6))
  np.testing.assert_allclose(estimate.numpy(), 5.0, rtol=1e-3)
  assert 1 < int(iterations) <= 50


@pytest.mark.parametrize("mode", MODES)
def test_top_eigenvalue_is_largest_magnitude_with_sign(mode):
  variables, loss_fn = _quadratic([3.0, 1.0, 0.5, 0.2, -6.0])
  estimate, _ = _run(mode, lambda: sharpness.hessian_top_eigenvalue(
      loss_fn, variables, max_iterations=50, tolerance=1e-6))
  np.testing.assert_allclose(estimate.numpy(), -6.0, rtol=1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_top_eigenvalue_of_trained_mlp_matches_eigvalsh(mode, trained_params):
  eigenvalues = np.linalg.eigvalsh(_explicit_hessian(trained_params))
  top, second, bottom = eigenvalues[-1], eigenvalues[-2], eigenvalues[0]
  assert abs(bottom) < 0.5 * top and second < 0.9 * top  # Precondition: a clear top eigenvalue.
  variables, loss_fn = _mlp(trained_params)
  estimate, iterations = _run(mode, lambda: sharpness.hessian_top_eigenvalue(
      loss_fn, variables, max_iterations=100, tolerance=1e-6))
  np.testing.assert_allclose(estimate.numpy(), top, rtol=1e-3)
  assert 1 < int(iterations) <= 100
  assert estimate.dtype == tf.float32 and iterations.dtype == tf.int32


def test_top_eigenvalue_stops_at_max_iterations_and_is_deterministic(trained_params):
  variables, loss_fn = _mlp(trained_params)
  runs = [sharpness.hessian_top_eigenvalue(loss_fn, variables, max_iterations=3, tolerance=0.0,
                                           seed=7) for _ in range(2)]
  assert int(runs[0][1]) == 3
  assert runs[0][0].numpy() == runs[1][0].numpy()


# --- SAM sharpness -----------------------------------------------------------------------------


def _np_loss_and_grad(params, x, labels):
  """Float64 numpy forward and hand-written backward pass of the MLP."""
  w1, b1, w2, b2 = (np.asarray(p, np.float64) for p in params)
  hidden = np.tanh(x @ w1 + b1)
  logits = hidden @ w2 + b2
  logits = logits - logits.max(axis=1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  loss = -log_probs[np.arange(len(labels)), labels].mean()
  d_logits = np.exp(log_probs)
  d_logits[np.arange(len(labels)), labels] -= 1.0
  d_logits /= len(labels)
  d_pre = (d_logits @ w2.T) * (1.0 - hidden**2)
  return loss, [x.T @ d_pre, d_pre.sum(0), hidden.T @ d_logits, d_logits.sum(0)]


def _np_sam(params, rho, magnitude_aware):
  x, labels = _data()
  x = x.astype(np.float64)
  loss, grads = _np_loss_and_grad(params, x, labels)
  weights = [np.asarray(p, np.float64) for p in params]
  if magnitude_aware:  # ASAM, T_w = |w|: e = rho |w|^2 g / || |w| g ||.
    norm = np.sqrt(sum(np.sum((np.abs(w) * g)**2) for w, g in zip(weights, grads)))
    steps = [rho * w**2 * g / norm for w, g in zip(weights, grads)]
  else:  # SAM: e = rho g / ||g||.
    norm = np.sqrt(sum(np.sum(g**2) for g in grads))
    steps = [rho * g / norm for g in grads]
  perturbed, _ = _np_loss_and_grad([w + e for w, e in zip(weights, steps)], x, labels)
  return perturbed - loss


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("magnitude_aware", [False, True])
def test_sam_sharpness_matches_numpy_and_restores_exactly(mode, magnitude_aware):
  params = _initial_params()
  variables, loss_fn = _mlp(params)
  got = _run(mode, lambda: sharpness.sam_sharpness(
      loss_fn, variables, rho=0.05, magnitude_aware=magnitude_aware))
  expected = _np_sam(params, 0.05, magnitude_aware)
  assert got.dtype == tf.float32 and abs(expected) > 1e-4  # A non-trivial value to compare.
  np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
  for v, p in zip(variables, params):
    assert np.array_equal(v.numpy(), p)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("magnitude_aware", [False, True])
def test_sam_sharpness_is_zero_for_rho_zero(mode, magnitude_aware):
  variables, loss_fn = _mlp(_initial_params())
  got = _run(mode, lambda: sharpness.sam_sharpness(
      loss_fn, variables, rho=0.0, magnitude_aware=magnitude_aware))
  assert got.numpy() == 0.0


def test_sam_sharpness_with_zero_gradient_is_zero_not_nan():
  variable = tf.Variable([0.0, 0.0])
  got = sharpness.sam_sharpness(lambda: tf.reduce_sum(variable**2), [variable], rho=0.1)
  assert got.numpy() == 0.0


def test_magnitude_aware_sharpness_ignores_layerwise_rescaling():
  """ReLU nets: (a W1, a b1, W2 / a) computes the same function; ASAM sees the same sharpness."""
  x, labels = _data()
  params = _initial_params()
  scale = np.float32(4.0)
  rescaled = [params[0] * scale, params[1] * scale, params[2] / scale, params[3]]

  def sharpness_of(values, magnitude_aware):
    variables = [tf.Variable(p) for p in values]

    def loss_fn():
      w1, b1, w2, b2 = variables
      logits = tf.nn.relu(x @ w1 + b1) @ w2 + b2
      return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    return sharpness.sam_sharpness(loss_fn, variables, magnitude_aware=magnitude_aware).numpy()

  np.testing.assert_allclose(sharpness_of(rescaled, True), sharpness_of(params, True), rtol=1e-4)
  plain, plain_rescaled = sharpness_of(params, False), sharpness_of(rescaled, False)
  assert abs(plain_rescaled - plain) > 0.1 * abs(plain)


# --- Keras variables ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_keras_model_variables(mode):
  """HVP, eigenvalue and SAM work on a Keras model's variables and agree with plain tf.Variables."""
  x, labels = _data()
  model = tf.keras.Sequential([
      tf.keras.Input((4,)),
      tf.keras.layers.Dense(6, activation="tanh"),
      tf.keras.layers.Dense(3),
  ])
  keras_variables = model.trainable_variables
  params = [v.numpy() for v in keras_variables]
  plain_variables, plain_loss_fn = _mlp(params)

  def keras_loss_fn():
    logits = model(x, training=False)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

  vector = [tf.ones(s) for s in SHAPES]

  def probes(loss_fn, variables):
    return (sharpness.hessian_vector_product(loss_fn, variables, vector),
            sharpness.hessian_top_eigenvalue(loss_fn, variables, max_iterations=5)[0],
            sharpness.sam_sharpness(loss_fn, variables, magnitude_aware=True))

  got = _run(mode, lambda: probes(keras_loss_fn, keras_variables))
  expected = probes(plain_loss_fn, plain_variables)
  for g, e in zip(got[0], expected[0]):
    np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[1].numpy(), expected[1].numpy(), rtol=1e-5)
  np.testing.assert_allclose(got[2].numpy(), expected[2].numpy(), rtol=1e-5, atol=1e-7)
  for v, p in zip(keras_variables, params):
    assert np.array_equal(v.numpy(), p)
