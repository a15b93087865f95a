"""Which variables a regularization term acts on: one structural rule, tested once, printed.

Every penalty and decay in Occam takes a `VariableSelector` (the idea of optax's weight-decay
*mask*): the choice of variables is explicit, testable on its own and logged, instead of a
substring filter on `variable.name` buried in a training loop. Keras 3 names a kernel just `kernel`
and Keras 2 `dense/kernel:0`, so name substrings are unreliable; the default rule is structural:

  every trainable variable, except
    (a) all variables of normalization layers (by `isinstance`),
    (b) any layer's `bias` attribute (by identity),
    (c) anything of rank <= 1,
    (d) the slopes of `PReLU` layers (by `isinstance`): He et al. (2015) do not decay them, and a
        convolutional PReLU keeps them at rank 3, which (c) would not catch,
    (e) the weights a layer lists in its `offsets` attribute: learned values added to (or put
        beside) the activations rather than multiplied with them, which is what a bias is; ViT's
        position embeddings and class token (rank 3) declare themselves so, as big_vision and timm
        leave them undecayed.

Embedding tables are rank-2 weights that are neither biases nor normalization parameters: covered.

Regexes on the variable path (`trainer.runtime.compat.variable_path`) add (`include`) or remove (`exclude`)
variables on top of that rule, and `layer_scales` multiplies the strength per layer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

import gin
import numpy as np
import tensorflow as tf

from trainer.common import checks
from trainer.runtime import compat


@dataclasses.dataclass(frozen=True)
class SelectedVariable:
  """One variable a term acts on, its path, and its strength multiplier (from `layer_scales`)."""
  variable: object
  path: str
  multiplier: float


@gin.configurable
class VariableSelector:
  """Selects the variables of a model that a regularization term acts on.

  Args:
    include: regexes (`re.search` on the variable path) whose matches are added to the default
      selection, even if the default rule excludes them (e.g. `r"/bias$"` to also decay biases).
    exclude: regexes whose matches are removed; applied after `include`.
    layer_scales: exact layer name -> multiplier on the strength for all variables of that layer
      (including its sublayers). Nested scales multiply.
    exclude_biases_and_norms: apply the default structural exclusion (biases, normalization layer
      variables, rank <= 1). With False every trainable variable is a candidate.

  Invalid configurations (bad regex, unknown layer name, negative or non-finite multiplier) and an
  empty selection raise `ValueError` when `select` is called, i.e. before training starts.
  """

  def __init__(self, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
               layer_scales: Mapping[str, float] | None = None,
               exclude_biases_and_norms: bool = True):
    self._include = _compile_all(include, "include")
    self._exclude = _compile_all(exclude, "exclude")
    self._layer_scales = {name: checks.nonnegative("VariableSelector", f"layer_scales[{name!r}]", scale)
                         for name, scale in dict(layer_scales or {}).items()}
    self._exclude_biases_and_norms = exclude_biases_and_norms

  def select(self, model) -> list[SelectedVariable]:
    """The selected trainable variables of `model`, in `model.trainable_variables` order."""
    multipliers = self._multipliers(model)
    excluded = _ids(excluded_variables(model)) if self._exclude_biases_and_norms else set()
    selected = []
    for variable in _unique(model.trainable_variables):
      path = compat.variable_path(variable)
      if self._is_selected(id(variable) in excluded, path):
        selected.append(SelectedVariable(variable, path, multipliers.get(id(variable), 1.0)))
    if not selected:
      available = "\n  ".join(compat.variable_path(v) for v in model.trainable_variables)
      raise ValueError(f"selector matched no variables ({self!r}); available trainable variable "
                       f"paths:\n  {available or '(none)'}")
    return selected

  def _is_selected(self, excluded_by_default: bool, path: str) -> bool:
    if any(pattern.search(path) for pattern in self._exclude):
      return False
    return not excluded_by_default or any(pattern.search(path) for pattern in self._include)

  def _multipliers(self, model) -> dict[int, float]:
    """id(variable) -> product of the `layer_scales` of every named layer that holds it."""
    layers = {layer.name: layer for layer in compat.flatten_layers(model)}
    unknown = sorted(set(self._layer_scales) - set(layers))
    if unknown:
      raise ValueError(f"layer_scales names layers not in the model: {unknown}; the model's layers "
                       f"are: {sorted(layers)}")
    multipliers: dict[int, float] = {}
    for name, scale in self._layer_scales.items():
      for variable in _unique(layers[name].trainable_weights):
        multipliers[id(variable)] = multipliers.get(id(variable), 1.0) * scale
    return multipliers

  def __repr__(self) -> str:
    return (f"VariableSelector(include={[p.pattern for p in self._include]}, "
            f"exclude={[p.pattern for p in self._exclude]}, layer_scales={self._layer_scales}, "
            f"exclude_biases_and_norms={self._exclude_biases_and_norms})")


def excluded_variables(model) -> list:
  """Trainable variables the default rule excludes: normalization params, biases, rank <= 1, PReLU slopes,
  declared offsets."""
  excluded_types = (*compat.normalization_layer_types(), tf.keras.layers.PReLU)
  excluded = set()
  for layer in compat.flatten_layers(model):
    if isinstance(layer, excluded_types):
      excluded |= _ids(layer.trainable_weights)
    bias = getattr(layer, "bias", None)
    if bias is not None:
      excluded.add(id(bias))
    excluded |= _ids(getattr(layer, "offsets", ()))
  return [v for v in _unique(model.trainable_variables)
          if id(v) in excluded or len(v.shape) <= 1]


def describe(selected: Sequence[SelectedVariable]) -> str:
  """Human-readable coverage: variable count, parameter count, and each path with its multiplier."""
  num_params = sum(int(np.prod(s.variable.shape)) for s in selected)
  lines = [f"{len(selected)} variables, {num_params:,} parameters:"]
  lines += [f"  {s.path} {tuple(s.variable.shape)} x{s.multiplier:g}" for s in selected]
  return "\n".join(lines)


def _unique(variables) -> list:
  """Variables without duplicates (shared layers), first kept. Variables are unhashable: use id."""
  seen: set[int] = set()
  unique = []
  for variable in variables:
    if id(variable) not in seen:
      seen.add(id(variable))
      unique.append(variable)
  return unique


def _ids(variables) -> set[int]:
  return {id(v) for v in variables}


def _compile_all(patterns: Sequence[str], argument: str) -> list[re.Pattern]:
  if isinstance(patterns, str):
    patterns = (patterns,)
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as error:
      raise ValueError(f"VariableSelector {argument} regex {pattern!r} does not compile: "
                       f"{error}") from error
  return compiled
