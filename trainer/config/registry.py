"""The one place that makes every configurable known to gin: `register_all()`.

Occam's own configurables declare themselves with `@gin.configurable` where they are defined; gin
learns of them when their module is imported. `register_all()` imports each of those modules and
registers the TensorFlow/Keras objects a config may name, under short names, so that no caller
needs side-effect imports. `gin.tf` cannot be imported on TF >= 2.16 (it needs `tf.estimator`), so
the Keras objects are registered here explicitly.

Optimizers are referenced *without* parentheses (`Trainer.optimizer = @Adam`): the run builder
constructs them with its own learning-rate schedule, so the schedule that the decoupled-decay terms
read is the one the optimizer uses.
"""

from __future__ import annotations

import functools
import importlib

import gin

# Every module that defines Occam configurables.
CONFIGURABLE_MODULES = (
    "models",
    "trainer.data",
    "trainer.data.service",
    "trainer.loop.early_stopping",
    "trainer.loop.losses",
    "trainer.loop.schedules",
    "trainer.loop.settings",
    "trainer.metrics.monitor",
    "trainer.regularization.averaging",
    "trainer.regularization.mixing",
    "trainer.regularization.selectors",
    "trainer.regularization.sharpness_aware",
    "trainer.regularization.terms",
)
KERAS_OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "Nadam", "Lion")
# Keras' learning-rate schedules, for `Trainer.learning_rate = @CosineDecay()` and the like.
KERAS_SCHEDULES = ("CosineDecay", "CosineDecayRestarts", "ExponentialDecay", "InverseTimeDecay",
                   "PiecewiseConstantDecay", "PolynomialDecay")


@functools.cache
def register_all() -> None:
  """Registers every configurable a gin file can name (idempotent: the work happens once per process)."""
  import tensorflow as tf

  from trainer.regularization import tfa_optimizers

  for module in CONFIGURABLE_MODULES:
    importlib.import_module(module)
  for name in KERAS_OPTIMIZERS:
    optimizer = getattr(tf.keras.optimizers, name, None)
    if optimizer is not None:  # Lion is Keras 3 only.
      gin.external_configurable(optimizer, name)
  for name in KERAS_SCHEDULES:
    gin.external_configurable(getattr(tf.keras.optimizers.schedules, name), name)
  # Layer-level penalties for `kernel_regularizer`. Named Keras* so they never clash with Occam's own
  # `L2`/`L1` terms, which are a different mechanism (see docs/REGULARIZATION.md).
  gin.external_configurable(tf.keras.regularizers.L2, "KerasL2")
  gin.external_configurable(tf.keras.regularizers.L1, "KerasL1")
  tfa_optimizers.register()  # tfa.optimizers.AdamW/SGDW/... where tensorflow-addons runs (TF <= 2.15)
