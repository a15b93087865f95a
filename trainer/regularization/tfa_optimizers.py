"""tensorflow-addons optimizers from gin, with Occam's `VariableSelector` choosing what they decay.

tensorflow-addons (tfa) is end of life: its last release, 0.23.0, imports only with TensorFlow
2.13-2.15 (Keras 2). Existing experiment configs still use its `AdamW`/`SGDW`, so the tfa lane
(`pip install -e '.[tfa]'`, see docs/TESTING.md) runs them under Occam's Trainer. Everything
tfa-specific lives here; tfa is imported only when one of its optimizers is built.

Gin names (factories, bound without parentheses like every optimizer; the Trainer passes its
learning-rate schedule):

  Trainer.optimizer = @tfa.optimizers.AdamW                 # or @tfa.optimizers.SGDW
  tfa.optimizers.AdamW.weight_decay = 1e-4
  Trainer.optimizer = @tfa.optimizers.extend_with_decoupled_weight_decay
  tfa.optimizers.extend_with_decoupled_weight_decay.base_optimizer = 'Nadam'   # or @Nadam
  tfa.optimizers.extend_with_decoupled_weight_decay.weight_decay = 1e-4

tfa's convention is `w -= weight_decay * w` per step, with no learning-rate factor
(docs/REGULARIZATION.md, "Decoupled weight decay"); with a schedule it does not follow the learning
rate (tfa asks you to schedule `weight_decay` by hand). Occam's
`DecoupledWeightDecay(convention='schedule_multiplier')` is the same update, follows the schedule,
and works with any optimizer.

Which variables are decayed is decided by a `VariableSelector` (default: no biases, no
normalization parameters), passed to tfa as `decay_var_list` on every `apply_gradients`. tfa's own
`exclude_from_weight_decay` is refused: it matches substrings of `variable.name`, and under
MirroredStrategy it decays nothing at all, because tfa compares its set of (distributed) variables
with the per-device components its update function receives. For the same reason the
`decay_var_list` given here holds each selected variable *and* its per-device components.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings
from collections.abc import Callable

import gin
import tensorflow as tf
from absl import logging

from trainer.regularization import selectors
from trainer.runtime import compat

INSTALL_HINT = (
    "tensorflow-addons 0.23.0 imports only with TensorFlow 2.13-2.15 (Keras 2) and Python <= 3.11. "
    "Use the tfa lane: `make test-tfa` creates it in .venv-tfa, or by hand "
    "`python3.11 -m venv .venv-tfa && .venv-tfa/bin/pip install -e '.[tfa]'` "
    "(tensorflow==2.15.1, tensorflow-addons==0.23.0). Or, on any TensorFlow, use Occam's "
    "`DecoupledWeightDecay(convention='schedule_multiplier')`, the same update as tfa AdamW/SGDW.")

GIN_MODULE = "tfa.optimizers"
# Legacy (OptimizerV2) classes: tfa's extension overrides their `_resource_apply_dense`, which the
# Keras 2 "new" optimizers (tf.keras.optimizers.Adam on TF 2.11+) do not have.
_EXTENDABLE = ("SGD", "Adam", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Ftrl")
_MISSING = object()


class TfaUnavailableError(ImportError):
  """tensorflow-addons cannot be imported with this TensorFlow; the message says how to get it."""


def available() -> bool:
  """Whether tfa can be used here: installed, and TensorFlow older than 2.16. Does not import tfa."""
  return _tf_version() < (2, 16) and importlib.util.find_spec("tensorflow_addons") is not None


def import_tfa():
  """The `tensorflow_addons` module, or `TfaUnavailableError` explaining how to install the lane."""
  if _tf_version() >= (2, 16):
    raise TfaUnavailableError(f"tensorflow-addons cannot run on TensorFlow {tf.__version__} "
                              f"(Keras {compat.KERAS_MAJOR}). {INSTALL_HINT}")
  try:
    with warnings.catch_warnings():  # tfa warns at every import that it is end of life.
      warnings.simplefilter("ignore")
      import tensorflow_addons
  except ImportError as error:
    raise TfaUnavailableError(f"tensorflow-addons is not importable ({error}). {INSTALL_HINT}") from error
  return tensorflow_addons


def explain_config_error(message: str) -> str:
  """The install hint to append to a gin error about a `tfa.optimizers` name here, else ''.

  The tfa names are registered only where tfa can run (registering `tfa.optimizers.AdamW` would
  make Keras' `@AdamW` an ambiguous gin selector), so elsewhere gin reports an unknown name.
  """
  if GIN_MODULE in message and not available():
    return (f"\nThe {GIN_MODULE} names exist only where tensorflow-addons runs, not on TensorFlow "
            f"{tf.__version__}. {INSTALL_HINT}")
  return ""


class _SelectedDecay:
  """Mixin for a tfa decoupled-decay optimizer: `decay_var_list` comes from a `VariableSelector`.

  Placed before the tfa class in the bases, so its `apply_gradients` supplies the list to tfa's.
  """

  def configure_selection(self, selector: selectors.VariableSelector, weight_decay) -> None:
    """Sets the selector (resolved later by `bind_selection`); `weight_decay` is kept for the log."""
    self._occam_selector = selector
    self._occam_weight_decay = weight_decay
    self._occam_decay_list: list | None = None

  def bind_selection(self, model, strategy: tf.distribute.Strategy) -> None:
    """Resolves the selection on `model` and logs it (the Trainer calls this once)."""
    selected = self._occam_selector.select(model)
    # tfa tests membership with `var.ref()` inside the per-device update, where `var` is a
    # component of a distributed variable: list the components too.
    self._occam_decay_list = [component for s in selected
                              for component in _with_components(s.variable, strategy)]
    logging.info("tfa %s decays (w -= weight_decay * w, weight_decay=%s) %s", type(self).__name__,
                 self._occam_weight_decay, selectors.describe(selected))

  def apply_gradients(self, grads_and_vars, name=None, **kwargs):
    if self._occam_decay_list is None:
      raise RuntimeError(f"{type(self).__name__}: call trainer.tfa_support.bind(optimizer, model, "
                         "strategy) before apply_gradients")
    return super().apply_gradients(grads_and_vars, name=name, decay_var_list=self._occam_decay_list,
                                   **kwargs)


@functools.cache
def _selected_decay_class(tfa_class: type) -> type:
  """`tfa_class` with `_SelectedDecay` mixed in (one class per tfa class, same name)."""
  return type(tfa_class.__name__, (_SelectedDecay, tfa_class), {})


def _build(gin_name: str, get_class: Callable, learning_rate, weight_decay, selector, kwargs: dict):
  """Constructs `get_class(tfa)(weight_decay, learning_rate, **kwargs)` fed by `selector`."""
  if learning_rate is _MISSING:
    raise TypeError(f"{gin_name} is an optimizer factory: bind it without parentheses, "
                    f"`Trainer.optimizer = @{gin_name}` with `{gin_name}.weight_decay = ...`. The Trainer "
                    "constructs it with its learning-rate schedule (`Trainer.learning_rate`).")
  if "exclude_from_weight_decay" in kwargs:
    raise ValueError(
        f"{gin_name}: exclude_from_weight_decay is not supported. It matches substrings of "
        "variable.name, and under MirroredStrategy tfa then decays no variable at all. Choose the "
        f"decayed variables with `{gin_name}.selector = @VariableSelector()` (by default biases and "
        "normalization parameters are excluded; `VariableSelector.exclude = [regex, ...]` excludes "
        "more by variable path).")
  optimizer = _selected_decay_class(get_class(import_tfa()))(
      weight_decay=weight_decay, learning_rate=learning_rate, **kwargs)
  optimizer.configure_selection(selector if selector is not None else selectors.VariableSelector(),
                                weight_decay)
  return optimizer


def adamw(learning_rate=_MISSING, *, weight_decay, selector: selectors.VariableSelector | None = None,
          **kwargs):
  """tfa `AdamW`: Adam plus `w -= weight_decay * w` on the selected variables, before the step.

  Args:
    learning_rate: passed by the Trainer (its schedule); never bind it.
    weight_decay: tfa's per-step decay factor (no learning-rate factor; constant under a schedule).
    selector: which variables are decayed (default `VariableSelector()`: not biases or norms).
    **kwargs: tfa `AdamW` arguments (`beta_1`, `beta_2`, `epsilon`, `amsgrad`, ...).
  """
  return _build(f"{GIN_MODULE}.AdamW", lambda tfa: tfa.optimizers.AdamW, learning_rate, weight_decay,
                selector, kwargs)


def sgdw(learning_rate=_MISSING, *, weight_decay, selector: selectors.VariableSelector | None = None,
         **kwargs):
  """tfa `SGDW`: SGD (with `momentum`, `nesterov`) plus `w -= weight_decay * w`, before the step.

  Arguments as `adamw`; **kwargs are tfa `SGDW` arguments.
  """
  return _build(f"{GIN_MODULE}.SGDW", lambda tfa: tfa.optimizers.SGDW, learning_rate, weight_decay,
                selector, kwargs)


def extend_with_decoupled_weight_decay(learning_rate=_MISSING, *, base_optimizer, weight_decay,
                                       selector: selectors.VariableSelector | None = None, **kwargs):
  """tfa `extend_with_decoupled_weight_decay(base_optimizer)`, constructed: any Keras 2 optimizer
  plus `w -= weight_decay * w` on the selected variables.

  Args:
    base_optimizer: a Keras optimizer name ('Nadam') or its gin reference (`@Nadam`). tfa extends
      the Keras 2 legacy optimizer of that name (one of `_EXTENDABLE`).
    **kwargs: the base optimizer's arguments (e.g. `momentum` for SGD).
    Others as `adamw`.
  """
  name = base_optimizer if isinstance(base_optimizer, str) else getattr(base_optimizer, "__name__", "")
  gin_name = f"{GIN_MODULE}.extend_with_decoupled_weight_decay"
  if name not in _EXTENDABLE:
    raise ValueError(f"{gin_name}: base_optimizer must be one of {list(_EXTENDABLE)} (tfa extends "
                     f"Keras 2's legacy optimizers), got {base_optimizer!r}")
  return _build(gin_name, lambda tfa: _extended_class(tfa, name), learning_rate, weight_decay,
                selector, kwargs)


@functools.cache
def _extended_class(tfa, name: str) -> type:
  """tfa's decoupled-decay extension of the Keras 2 legacy optimizer `name`, created once."""
  return tfa.optimizers.extend_with_decoupled_weight_decay(getattr(tf.keras.optimizers.legacy, name))


def is_decoupled(optimizer) -> bool:
  """True for a tfa decoupled-weight-decay optimizer (its decay is tfa's, fed by the selector here)."""
  tfa = sys.modules.get("tensorflow_addons")
  return tfa is not None and isinstance(optimizer, tfa.optimizers.DecoupledWeightDecayExtension)


def bind(optimizer, model, strategy: tf.distribute.Strategy) -> None:
  """Binds a tfa optimizer built here to `model`'s selection; refuses tfa's Mirrored defect.

  Other optimizers pass through. A tfa decoupled-decay optimizer built elsewhere (a user's own
  factory) with `exclude_from_weight_decay` on distributed variables would silently decay nothing:
  that is a `ValueError` naming the variables, the strategy and the replacements.
  """
  inner = compat.inner_optimizer(optimizer)
  if isinstance(inner, _SelectedDecay):
    inner.bind_selection(model, strategy)
    return
  tfa = sys.modules.get("tensorflow_addons")
  if (tfa is None or not isinstance(inner, tfa.optimizers.DecoupledWeightDecayExtension)
      or not inner.exclude_from_weight_decay):
    return
  distributed = [v for v in model.trainable_variables if isinstance(v, tf.distribute.DistributedValues)]
  if distributed:
    paths = ", ".join(compat.variable_path(v) for v in distributed)
    raise ValueError(
        f"tfa {type(inner).__name__} with exclude_from_weight_decay={inner.exclude_from_weight_decay} "
        f"decays none of the model's variables under {type(strategy).__name__} "
        f"({strategy.num_replicas_in_sync} replicas): tfa keeps the distributed variables in its "
        f"decay set and checks the per-device components against it. Affected: {paths}. Use "
        f"`Trainer.regularizers = [@DecoupledWeightDecay()]` with "
        f"`DecoupledWeightDecay.convention = 'schedule_multiplier'` and `DecoupledWeightDecay.rate` "
        f"= tfa's weight_decay (the same update, correct under every strategy), or Occam's tfa "
        f"factories, e.g. `Trainer.optimizer = @{GIN_MODULE}.AdamW` (also `SGDW`, "
        f"`extend_with_decoupled_weight_decay`), which give tfa the selected variables and their "
        f"per-device components.")


def register() -> None:
  """Registers the tfa factories with gin where tfa can run (see `explain_config_error`)."""
  if not available():
    return
  gin.external_configurable(adamw, "AdamW", module=GIN_MODULE)
  gin.external_configurable(sgdw, "SGDW", module=GIN_MODULE)
  gin.external_configurable(extend_with_decoupled_weight_decay, "extend_with_decoupled_weight_decay",
                            module=GIN_MODULE)


def _with_components(variable, strategy: tf.distribute.Strategy) -> list:
  """`variable` and, if it is distributed, its per-device components."""
  components = list(strategy.experimental_local_results(variable))
  return [variable] + [c for c in components if c is not variable]


def _tf_version() -> tuple[int, int]:
  major, minor = tf.__version__.split(".")[:2]
  return int(major), int(minor)
