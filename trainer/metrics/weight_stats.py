"""Weight statistics for the `norms/*` and `sparsity/*` summaries.

Pure functions over lists of variables or tensors (`tf.Variable`, Keras 3 `keras.Variable`, or
tensors of any float dtype). Results are float32 scalars; every function runs eagerly and inside
`tf.function`. Statistics are global: they treat all tensors as one flat vector, so a large layer
counts for as many entries as it has, not as one layer.
"""

from __future__ import annotations

import re
from typing import Sequence

import tensorflow as tf

from trainer.runtime import compat

Tensors = Sequence  # of tf.Tensor, tf.Variable or keras.Variable


def _float32(tensors: Tensors) -> list[tf.Tensor]:
  """The values as float32 tensors (reads variables; Keras 3 variables convert like tensors)."""
  return [tf.cast(t, tf.float32) for t in tensors]


def _sum(values: list[tf.Tensor]) -> tf.Tensor:
  """`tf.add_n` that also accepts an empty list (the sum is 0)."""
  return tf.add_n(values) if values else tf.constant(0.0, tf.float32)


def global_l2_norm(tensors: Tensors) -> tf.Tensor:
  """sqrt(sum of w^2 over all entries of all tensors); 0 for an empty list."""
  return tf.sqrt(_sum([tf.reduce_sum(tf.square(t)) for t in _float32(tensors)]))


def global_l1_norm(tensors: Tensors) -> tf.Tensor:
  """Sum of |w| over all entries of all tensors; 0 for an empty list."""
  return _sum([tf.reduce_sum(tf.abs(t)) for t in _float32(tensors)])


def _fraction(tensors: Tensors, predicate) -> tf.Tensor:
  """The fraction of all entries for which `predicate(t)` is True; 0 for no entries.

  Counts are int32 (no 64-bit type, which a TPU step may not hold), exact up to 2^31 entries; the
  division is float32, correctly rounded while both counts are below 2^24 (a float64 division rounded
  to float32 gives the same bits there), within 2 ulps beyond.
  """
  values = _float32(tensors)
  hits = [tf.math.count_nonzero(predicate(t), dtype=tf.int32) for t in values]
  sizes = [tf.size(t, out_type=tf.int32) for t in values]
  zero = tf.constant(0, tf.int32)
  return tf.math.divide_no_nan(tf.cast(tf.add_n(hits) if hits else zero, tf.float32),
                               tf.cast(tf.add_n(sizes) if sizes else zero, tf.float32))


def zero_fraction(tensors: Tensors) -> tf.Tensor:
  """The fraction of entries exactly 0 over all tensors, weighted by entry count (sparsity)."""
  return _fraction(tensors, lambda t: tf.equal(t, 0.0))


def near_zero_fraction(tensors: Tensors, threshold: float) -> tf.Tensor:
  """The fraction of entries with |w| < threshold over all tensors, weighted by entry count.

  Subgradient L1 rarely produces exact zeros (weights oscillate around 0), so this is the sparsity
  measure that compares across optimizers.
  """
  return _fraction(tensors, lambda t: tf.abs(t) < threshold)


def distance(tensors: Tensors, reference_tensors: Tensors) -> tf.Tensor:
  """The global L2 norm of `tensors - reference_tensors`, e.g. the distance from initialization.

  Raises:
    ValueError: if the two lists differ in length.
  """
  if len(tensors) != len(reference_tensors):
    raise ValueError(f"distance: {len(tensors)} tensors but {len(reference_tensors)} references")
  return global_l2_norm(
      [t - r for t, r in zip(_float32(tensors), _float32(reference_tensors))])


def _summary_safe(name: str) -> str:
  """`name` with every character TensorBoard tags do not allow replaced by `_`."""
  return re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)


def per_layer_kernel_l2(model) -> dict[str, tf.Tensor]:
  """{layer name: ||kernel||_2} for every layer below `model` that has a `kernel`.

  Walks all nested layers (`compat.flatten_layers`, depth first, each layer once), skipping the
  model itself and layers without a built `kernel` (e.g. biases-only or normalization layers). Keys
  are layer names made summary-safe; a name seen twice (same-named layers in different sub-models)
  gets `_1`, `_2`, ... in walk order, so keys are unique and stable for a given model.
  """
  norms: dict[str, tf.Tensor] = {}
  layers = compat.flatten_layers(model, include_self=False)
  for layer in layers:
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
      continue
    name = _unique(_summary_safe(layer.name), norms)
    norms[name] = global_l2_norm([kernel])
  return norms


def _unique(name: str, taken: dict) -> str:
  """`name`, or `name_k` with the smallest k >= 1 that is not in `taken`."""
  candidate, k = name, 0
  while candidate in taken:
    k += 1
    candidate = f"{name}_{k}"
  return candidate
