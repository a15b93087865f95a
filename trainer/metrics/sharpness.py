"""Flatness probes: Hessian-vector products, the Hessian's top eigenvalue, and SAM sharpness.

The metrics layer calls these at loop boundaries with a `loss_fn` that evaluates the model in
inference mode on a fixed probe batch, so that successive values are comparable. Every function runs
eagerly and inside `tf.function` (loops are `tf.while_loop`s, convergence is decided in the graph),
computes in float32, and accepts `tf.Variable`s as well as Keras 3 `keras.Variable`s.

Under a distribution strategy the work runs on every replica, inside `strategy.run`: `loss_fn` returns
this replica's share of the loss (its examples' sum divided by the global count, as
`tf.nn.compute_average_loss` gives it), and gradients, HVPs and loss values are summed over the
replicas (`sum_over_replicas`), so every replica computes the same probe and the result is the first
replica's. `hessian_top_eigenvalue` and `sam_sharpness` take the `strategy` and are called in
cross-replica context (one `strategy.run` per power iteration: MirroredStrategy cannot all-reduce
inside a `tf.while_loop` of the replica function); with the default strategy they run as they read.

Sharpness depends on the weight scale (Dinh et al. 2017): log it next to the weight norm, and prefer
`sam_sharpness(..., magnitude_aware=True)` when comparing runs with different regularization.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf

from trainer.regularization import distributed_update
from trainer.runtime import compat

LossFn = Callable[[], tf.Tensor]


def sum_over_replicas(values: Any) -> Any:
  """`values` (a nest of tensors) summed over the replicas in one all-reduce, in replica context.

  Unchanged with one replica or in cross-replica context, where a share is the whole.
  """
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return values
  return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _first_replica(strategy: tf.distribute.Strategy, values):
  """The first replica's copy of each value `strategy.run` returned (they are all equal here)."""
  return tf.nest.map_structure(lambda value: strategy.experimental_local_results(value)[0], values)


def hessian_vector_product(loss_fn: LossFn, variables: Sequence,
                           vector: Sequence[tf.Tensor]) -> list[tf.Tensor]:
  """Returns H @ vector, H the Hessian of `loss_fn()` with respect to `variables`.

  `vector` has one tensor per variable, of the same shape. The result has the same structure, in
  float32; variables the loss does not depend on get zeros. In replica context `loss_fn()` is this
  replica's share and the result is summed over the replicas (the HVP of the whole loss).

  Cost: one HVP: a forward pass, its backward pass, and the backward pass of that; about 2x a
  gradient (measured 1.5-2.2x in a `tf.function` on small MLPs, 2.6-3x eagerly).

  Implementation: back-over-back (a gradient of the gradient, weighted by `vector`, with nested
  `GradientTape`s). Forward-over-back (`tf.autodiff.ForwardAccumulator` around a tape) gives the
  same numbers; measured on TF 2.15 and 2.21 (CPU, MLPs 64-32-32-10 and 64-256-256-10, batch 256)
  it is no faster in a `tf.function` (within 10% either way) and 4-6x slower eagerly, where the
  accumulator traces a JVP function per op. Back-over-back also needs nothing but a tape.
  """
  tf_variables = [compat.tf_variable(v) for v in variables]
  with tf.GradientTape(watch_accessed_variables=False) as outer:
    outer.watch(tf_variables)
    with tf.GradientTape(watch_accessed_variables=False) as inner:
      inner.watch(tf_variables)
      loss = tf.cast(loss_fn(), tf.float32)
    grads = inner.gradient(loss, tf_variables,
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
  weights = [tf.cast(u, g.dtype) for u, g in zip(vector, grads)]
  hvp = outer.gradient(grads, tf_variables, output_gradients=weights,
                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return sum_over_replicas([tf.cast(h, tf.float32) for h in hvp])


def _dot(xs: Sequence[tf.Tensor], ys: Sequence[tf.Tensor]) -> tf.Tensor:
  """The inner product of two lists of tensors viewed as one flat vector."""
  return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(xs, ys)])


def _normalized(xs: Sequence[tf.Tensor]) -> list[tf.Tensor]:
  """`xs / ||xs||` over all tensors together; zeros stay zeros."""
  norm = tf.sqrt(_dot(xs, xs))
  return [tf.math.divide_no_nan(x, norm) for x in xs]


def _start_vector(variables: Sequence, seed: int) -> list[tf.Tensor]:
  """A unit-norm Gaussian direction, the same for the same `seed` and shapes (stateless RNG)."""
  return _normalized([
      tf.random.stateless_normal(tf.shape(compat.tf_variable(v)), seed=[seed, index])
      for index, v in enumerate(variables)
  ])


def hessian_top_eigenvalue(loss_fn: LossFn, variables: Sequence, *, max_iterations: int = 20,
                           tolerance: float = 1e-3, seed: int = 0,
                           strategy: tf.distribute.Strategy | None = None) -> tuple[tf.Tensor, tf.Tensor]:
  """Estimates the Hessian's eigenvalue of largest magnitude by power iteration.

  Each iteration computes `Hv` for the current unit vector `v`, takes the Rayleigh quotient
  `v.Hv` as the estimate and `Hv / ||Hv||` as the next `v`. The loop stops after `max_iterations`
  or once two consecutive estimates differ by at most `tolerance` relative to the latest one (never
  before the second iteration). The start vector is drawn from a stateless RNG seeded by `seed`, so
  repeated probes of the same model are comparable.

  Power iteration converges to the eigenvalue of largest *magnitude*, with its sign. Near a minimum
  the Hessian is (close to) positive semi-definite, so this is the top eigenvalue; far from one a
  large negative eigenvalue can win. The estimate's error shrinks like (l2/l1)^(2k) for the two
  largest magnitudes l1 > l2; when they are close it converges slowly and the stopping rule stops
  early: the remaining error is about `tolerance / (1 - (l2/l1)^2)`.

  Cost: `iterations` HVPs (each about 2 gradients), nothing else. Each iteration is one
  `strategy.run` (default: the current strategy), the vector staying on the replicas between them.

  Returns:
    (estimate, iterations): the eigenvalue estimate (float32 scalar) and the number of HVPs used
    (int32 scalar, between 1 and `max_iterations`).
  """
  strategy = strategy or tf.distribute.get_strategy()
  tolerance = tf.cast(tolerance, tf.float32)

  def power_step(vector):
    hvp = hessian_vector_product(loss_fn, variables, vector)
    return _normalized(hvp), _dot(vector, hvp)

  def body(iteration, vector, _, estimate):
    vector, new_estimate = strategy.run(power_step, args=(vector,))
    return iteration + 1, vector, estimate, _first_replica(strategy, new_estimate)

  def not_converged(iteration, unused_vector, previous, estimate):
    converged = tf.abs(estimate - previous) <= tolerance * tf.abs(estimate)
    return tf.logical_or(iteration < 2, tf.logical_not(converged))

  zero = tf.constant(0.0, tf.float32)
  iterations, _, _, estimate = tf.while_loop(
      not_converged, body,
      (tf.constant(0, tf.int32), strategy.run(lambda: _start_vector(variables, seed)), zero, zero),
      maximum_iterations=max_iterations)
  return estimate, iterations


def _perturbation(gradients: Sequence[tf.Tensor], weights: Sequence[tf.Tensor], rho: float,
                  magnitude_aware: bool) -> list[tf.Tensor]:
  """The SAM (or ASAM) ascent step `e`; the formulas are in `sam_sharpness`."""
  if not magnitude_aware:
    return [rho * d for d in _normalized(gradients)]
  scaled = [tf.abs(w) * g for w, g in zip(weights, gradients)]
  norm = tf.sqrt(_dot(scaled, scaled))
  return [rho * tf.math.divide_no_nan(tf.abs(w) * s, norm) for w, s in zip(weights, scaled)]


def sam_sharpness(loss_fn: LossFn, variables: Sequence, *, rho: float = 0.05, magnitude_aware: bool = False,
                  strategy: tf.distribute.Strategy | None = None) -> tf.Tensor:
  """The loss increase after one SAM ascent step: `L(w + e) - L(w)` (float32 scalar).

  Plain (Foret et al. 2021, eq. 2 with p = 2): `e = rho * g / ||g||`, g the gradient at w, norms
  over all variables together.

  Magnitude-aware (ASAM, Kwon et al. 2021, eq. 6 with p = 2, T_w = |w|, eta = 0):
  `e = rho * |w|^2 * g / || |w| * g ||`, elementwise products. This is the ascent step of
  `|| e / |w| || <= rho`, a ball measured relative to each weight's magnitude, so the value does not
  change when a ReLU network is rescaled layer-wise without changing its function (w1 -> a w1,
  w2 -> w2 / a). Weights that are exactly 0 are not perturbed.

  A zero gradient gives a zero perturbation (not NaN), and rho = 0 gives exactly 0.

  The variables are perturbed in place and then assigned their saved values, so they are restored
  bit-exactly (subtracting `e` again would not be exact in floating point). It runs as one
  `strategy.run` (default: the current strategy); every replica perturbs its copy by the same `e`.

  Cost: one gradient (which also gives L(w)) and one forward pass.
  """
  strategy = strategy or tf.distribute.get_strategy()
  tf_variables = [compat.tf_variable(v) for v in variables]

  def increase() -> tf.Tensor:
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(tf_variables)
      loss = tf.cast(loss_fn(), tf.float32)
    gradients = tape.gradient(loss, tf_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    loss, gradients = sum_over_replicas((loss, [tf.cast(g, tf.float32) for g in gradients]))
    saved = [v.read_value() for v in tf_variables]
    weights = [tf.cast(w, tf.float32) for w in saved]
    perturbation = _perturbation(gradients, weights, rho, magnitude_aware)
    distributed_update.assign_values(variables, [w + e for w, e in zip(weights, perturbation)])
    # In a tf.function, automatic control dependencies keep this program order on each variable.
    perturbed_loss = sum_over_replicas(tf.cast(loss_fn(), tf.float32))
    distributed_update.assign_values(variables, saved)
    return perturbed_loss - loss

  return _first_replica(strategy, strategy.run(increase))
