"""Shared test setup: 4 logical CPU devices for real multi-replica strategies, gin isolation, one sweep,
two CLI runs.

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

from tests.cli_fixtures import cli_runs  # noqa: E402,F401  (the session's two real CLI runs, shared)
from tests.sweep_fixtures import swept  # noqa: E402,F401  (the session's one tiny real sweep, shared)
from trainer.runtime import strategy as strategy_lib  # noqa: E402

NUM_LOGICAL_CPUS = 4
strategy_lib.split_cpu(NUM_LOGICAL_CPUS)


@pytest.fixture(autouse=True)
def clean_gin():
  """Each test starts and ends with an empty, unlocked gin config."""
  gin.clear_config()
  yield
  gin.clear_config()


@functools.cache
def mirrored(num_replicas: int = 2) -> tf.distribute.MirroredStrategy:
  """The session's MirroredStrategy over the first `num_replicas` logical CPUs.

  One instance per process: TensorFlow's collective ops key their groups and instances per process,
  so two strategies over the same devices (or of different sizes) collide. Tests that need another
  replica count run the CLI in a subprocess.
  """
  return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_replicas)])
