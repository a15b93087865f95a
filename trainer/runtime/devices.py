"""What kind of device a strategy trains on, and what that decides: whether the step is XLA-compiled.

`Trainer.jit_compile = 'auto'` (the default) is resolved here and nowhere else:

* TPU: always compiled (TPUStrategy compiles every replica function; XLA is the only TPU compiler).
* GPU: compiled, as Keras `fit`'s `jit_compile='auto'` does on a machine with a GPU.
* CPU: not compiled. Measured side by side (`scripts/benchmark_models.py --jit`, docs/PERFORMANCE.md),
  XLA is slower for the compute-bound MLP and gains on the convolutional and attention models are
  not worth changing every published CPU figure (XLA rounds differently); Keras' 'auto' leaves XLA
  off on CPU-only machines too.

`True` or `False` is taken as given on any device.
"""

from __future__ import annotations

import tensorflow as tf

AUTO = "auto"
JIT_COMPILE_SETTINGS = (AUTO, True, False)
_COMPILED_BY_DEFAULT = {"TPU": True, "GPU": True, "CPU": False}


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


def jit_compile(setting: bool | str, strategy: tf.distribute.Strategy) -> bool:
  """Whether the replica step is XLA-compiled: `setting` if True/False, else the device kind's default."""
  if setting not in JIT_COMPILE_SETTINGS or not isinstance(setting, (bool, str)):
    raise ValueError(f"jit_compile must be 'auto', True or False, got {setting!r}")
  return _COMPILED_BY_DEFAULT[device_kind(strategy)] if setting == AUTO else setting


def describe_jit_compile(setting: bool | str, strategy: tf.distribute.Strategy) -> str:
  """The decision in words, for the start-of-run log: 'XLA: off (jit_compile='auto' on CPU)'."""
  compiled = jit_compile(setting, strategy)
  why = f"jit_compile='auto' on {device_kind(strategy)}" if setting == AUTO else f"jit_compile={setting}"
  return f"XLA: {'on' if compiled else 'off'} ({why})"
