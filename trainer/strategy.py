"""From the `--strategy` flag to a `tf.distribute.Strategy`, logged so the user can trust it."""

from __future__ import annotations

import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "one_device", "mirrored")


def split_cpu(num_devices: int) -> None:
  """Splits the host CPU into `num_devices` logical devices (must run before TensorFlow touches devices)."""
  if num_devices < 1:
    raise ValueError(f"--virtual_devices must be >= 1, got {num_devices}")
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError as error:
    raise RuntimeError("--virtual_devices must be applied before TensorFlow initializes its devices") from error


def create(name: str) -> tf.distribute.Strategy:
  """The strategy called `name`; unknown names list the valid ones."""
  if name == "default":
    strategy = tf.distribute.get_strategy()
  elif name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  elif name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
  else:
    raise ValueError(f"--strategy={name!r} is not one of {', '.join(STRATEGIES)}")
  logging.info("strategy: %s | replicas: %d | devices: %s", type(strategy).__name__,
               strategy.num_replicas_in_sync, ", ".join(_devices(strategy)))
  return strategy


def _devices(strategy: tf.distribute.Strategy) -> list[str]:
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy places ops wherever TensorFlow does.
    return ["(default placement)"]
