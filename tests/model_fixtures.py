"""Small instances of every model, built once per test process for test_models and test_stochastic_depth.

Each is built on an input shape and class count that differ from the model's defaults (the contract:
both come from the data), without stochastic depth; `build_small(name, **overrides)` makes another
instance with the same shapes.
"""

from __future__ import annotations

import functools

import tensorflow as tf

import models

# name: (factory, small kwargs, input shape)
SMALL = {
    "MLP": (models.MLP, {"hidden_sizes": (8,)}, (6, 5)),
    "ResNet": (models.ResNet, {}, (8, 8, 2)),
    "CifarResNet": (models.CifarResNet, {"depth": 8}, (8, 8, 2)),
    "PreActResNet": (models.PreActResNet, {"width": 4}, (8, 8, 2)),
    "WideResNet": (models.WideResNet, {"depth": 10, "width": 1, "dropout": 0.3}, (8, 8, 2)),
    "ImageNetResNet": (models.ImageNetResNet, {"width": 4}, (16, 16, 2)),
    "ViT": (models.ViT, {"variant": "Ti", "depth": 2, "patch_size": 4}, (8, 12, 2)),
    "MNIST1DLogistic": (models.MNIST1DLogistic, {}, (30,)),
    "MNIST1DMLP": (models.MNIST1DMLP, {"hidden_size": 8}, (30,)),
    "MNIST1DCNN": (models.MNIST1DCNN, {"channels": 4}, (30, 1)),
    "MNIST1DGRU": (models.MNIST1DGRU, {"hidden_size": 3}, (30,)),
}
NUM_OUTPUTS = 7


def build_small(name: str, **overrides) -> tf.keras.Model:
  factory, kwargs, shape = SMALL[name]
  return factory(input_shape=shape, num_outputs=NUM_OUTPUTS, **{**kwargs, **overrides})


@functools.cache
def small_models() -> dict[str, tf.keras.Model]:
  """Every model of `SMALL`, built once (in float32) and shared: tests must not train or change them."""
  tf.keras.utils.set_random_seed(0)
  built = {name: build_small(name) for name in SMALL}
  for name, model in built.items():
    model(tf.zeros((1,) + SMALL[name][2]))  # a Sequential (MLP) has no variables until called
  return built
