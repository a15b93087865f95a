"""The TensorFlow/Keras objects Occam exposes to gin, under short names.

`gin.tf` cannot be imported on TF >= 2.16 (it needs `tf.estimator`), so the configurables a user
needs are registered here explicitly, once. Optimizers are referenced *without* parentheses
(`Trainer.optimizer = @Adam`): the Trainer constructs them with its own learning-rate schedule, so
the schedule that the decoupled-decay terms read is the one the optimizer uses.
"""

from __future__ import annotations

import gin
import tensorflow as tf

from trainer.regularization import tfa_optimizers as tfa_support

_OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "Nadam", "Lion")


def _register() -> None:
  for name in _OPTIMIZERS:
    optimizer = getattr(tf.keras.optimizers, name, None)
    if optimizer is not None:  # Lion is Keras 3 only.
      gin.external_configurable(optimizer, name)
  # Layer-level penalties for `kernel_regularizer`. Named Keras* so they never clash with Occam's own
  # `L2`/`L1` terms, which are a different mechanism (see README, "Regularization").
  gin.external_configurable(tf.keras.regularizers.L2, "KerasL2")
  gin.external_configurable(tf.keras.regularizers.L1, "KerasL1")
  tfa_support.register()  # tfa.optimizers.AdamW/SGDW/... where tensorflow-addons runs (TF <= 2.15)


_register()
