"""Shared test setup: 4 logical CPU devices for real multi-replica strategies, and gin isolation.

The CPU is split before any test touches TensorFlow's devices, so every module can build a
MirroredStrategy over 1, 2 or 4 replicas in the same process.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 4


def _split_cpu() -> None:
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)


_split_cpu()


@pytest.fixture(autouse=True)
def clean_gin():
  """Each test starts and ends with an empty, unlocked gin config."""
  gin.clear_config()
  yield
  gin.clear_config()


@functools.lru_cache(maxsize=None)
def mirrored(num_replicas: int = 2) -> tf.distribute.MirroredStrategy:
  """The session's MirroredStrategy over the first `num_replicas` logical CPUs.

  One instance per process: TensorFlow's collective ops key their groups and instances per process,
  so two strategies over the same devices (or of different sizes) collide. Tests that need another
  replica count run the CLI in a subprocess.
  """
  return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_replicas)])
