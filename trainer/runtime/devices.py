"""What kind of device a strategy trains on, and the settings that depend on it, resolved in one place.

A *per-kind setting* is bound to one value for every device, or to a mapping from kinds of device
('cpu', 'gpu', 'tpu') to values, e.g. `Trainer.mixed_precision = {'tpu': 'mixed_bfloat16'}` (the
ImageNet recipes); a kind left out of the mapping gets the setting's default on that kind. A setting
with `'auto'` gives every kind its default. `PerKind.check` validates a bound value (the caller adds
the binding's name to the error); `resolve` says what it means on a strategy's devices. Two settings:

`JIT_COMPILE` (`Trainer.jit_compile`): whether the replica step is XLA-compiled. 'auto' (the default):

* TPU: always compiled (TPUStrategy compiles every replica function; XLA is the only TPU compiler).
* GPU: compiled, as Keras `fit`'s `jit_compile='auto'` does on a machine with a GPU.
* CPU: not compiled. Measured side by side (`scripts/benchmark_models.py --jit`, docs/PERFORMANCE.md),
  XLA is slower for the compute-bound MLP and gains on the convolutional and attention models are
  not worth changing every published CPU figure (XLA rounds differently); Keras' 'auto' leaves XLA
  off on CPU-only machines too.

`MIXED_PRECISION` (`Trainer.mixed_precision`): the Keras precision policy; the default on every kind is
None (float32).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import tensorflow as tf

AUTO = "auto"
KINDS = ("cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class PerKind:
  """A setting whose value may depend on the kind of device: what one kind may be given (`values`), each
  kind's `default` (where a mapping leaves the kind out, and what 'auto' means) and whether 'auto' is
  accepted."""

  name: str
  values: tuple
  default: Mapping[str, Any]
  auto: bool = False

  def check(self, value: Any) -> Any:
    """`value` if it is valid (a mapping is returned as a dict); if not, a ValueError saying what is wrong
    and what is accepted, without the binding's name (the caller's to add)."""
    if self.auto and _is(value, AUTO):
      return value
    if not isinstance(value, Mapping):
      if not any(_is(value, allowed) for allowed in self.values):
        raise ValueError(f"must be {self._accepted()}")
      return value
    unknown = [kind for kind in value if kind not in KINDS]
    if unknown or not value:
      raise ValueError(f"the keys must be kinds of device ({', '.join(KINDS)}), got "
                       f"{', '.join(map(repr, unknown)) or 'none'}")
    for kind, choice in value.items():
      if not any(_is(choice, allowed) for allowed in self.values):
        raise ValueError(f"{choice!r} for {kind!r} is not one of {_listed(self.values)}")
    return dict(value)

  def _accepted(self) -> str:
    one = _listed(((AUTO,) if self.auto else ()) + self.values)
    return f"{one}, or a mapping of device kinds ({', '.join(KINDS)}) to {_listed(self.values)}"


JIT_COMPILE = PerKind("jit_compile", (True, False), {"tpu": True, "gpu": True, "cpu": False}, auto=True)
MIXED_PRECISION = PerKind("mixed_precision", (None, "float32", "mixed_bfloat16", "mixed_float16"),
                          dict.fromkeys(KINDS))


def device_kind(strategy: tf.distribute.Strategy) -> str:
  """'TPU', 'GPU' or 'CPU': the kind of the devices the strategy's replicas run on."""
  if isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)):
    return "TPU"
  try:
    devices = list(strategy.extended.worker_devices)
  except RuntimeError:  # the default strategy: wherever TensorFlow places ops
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
  kinds = {tf.DeviceSpec.from_string(device).device_type for device in devices}
  return "TPU" if "TPU" in kinds else "GPU" if "GPU" in kinds else "CPU"


def resolve(setting: PerKind, value: Any, strategy: tf.distribute.Strategy) -> Any:
  """What `value` (checked by `setting.check`) of `setting` means on the kind of `strategy`'s devices."""
  value = setting.check(value)
  if not isinstance(value, Mapping) and not _is(value, AUTO):
    return value
  kind = device_kind(strategy).lower()
  return value.get(kind, setting.default[kind]) if isinstance(value, Mapping) else setting.default[kind]


def explain(setting: PerKind, value, strategy: tf.distribute.Strategy) -> str:
  """The binding, and the device kind where it decides: "jit_compile='auto' on CPU", "jit_compile=True"."""
  depends = isinstance(value, Mapping) or _is(value, AUTO)
  return f"{setting.name}={value!r}" + (f" on {device_kind(strategy)}" if depends else "")


def describe_jit_compile(value: bool | str, strategy: tf.distribute.Strategy) -> str:
  """The decision in words, for the start-of-run log: "XLA: off (jit_compile='auto' on CPU)"."""
  compiled = resolve(JIT_COMPILE, value, strategy)
  return f"XLA: {'on' if compiled else 'off'} ({explain(JIT_COMPILE, value, strategy)})"


def describe_precision(value, strategy: tf.distribute.Strategy) -> str:
  """The decision in words, for the start-of-run log: "precision: float32 (mixed_precision=None)"."""
  policy = resolve(MIXED_PRECISION, value, strategy)
  return f"precision: {policy or 'float32'} ({explain(MIXED_PRECISION, value, strategy)})"


def _is(value, allowed) -> bool:
  """`value == allowed` of the same type: 1 is not True, and 'auto' is no bool."""
  return type(value) is type(allowed) and value == allowed


def _listed(values) -> str:
  return ", ".join(map(repr, values))
