"""The shipped recipes (gin_configs/{cifar10,cifar100,imagenet2012}/*.gin) say what their papers say.

Each recipe is parsed with Occam's own parser and its key hyperparameters are read back with gin. The
expected values are the papers' numbers, converted here independently of the recipe: PyTorch-style
weight decay `wd` (added to the gradient as `wd * w`) is `L2.scale = wd / 2`, and epochs become steps
over the training split of the recipe's data config at its batch size.
"""

from __future__ import annotations

import glob
import math
import os

import gin
import pytest

from trainer.config import parsing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_DIRS = ("cifar10", "cifar100", "imagenet2012")
CIFAR_TRAIN = 45_000  # data/cifar10.gin: train[:45000]
IMAGENET_TRAIN = round(0.99 * 1_281_167)  # data/imagenet2012.gin: train[:99%] of TFDS's 1,281,167


def steps(epochs: float, examples: int, batch_size: int) -> int:
  """`epochs` passes over `examples` at `batch_size`, to the nearest step (halves up)."""
  return math.floor(epochs * examples / batch_size + 0.5)


def he_cifar(depth: int) -> dict:
  """He et al. 2016, Sec. 4.2: momentum 0.9, wd 1e-4, batch 128, lr 0.1 /10 at 32k and 48k of 64k."""
  return {"tfds.name": "cifar10", "Trainer.model": "CifarResNet", "CifarResNet.depth": depth,
          "Trainer.optimizer": "SGD", "SGD.momentum": 0.9, "SGD.nesterov": False,
          "L2.scale": 1e-4 / 2, "Trainer.batch_size": 128, "Trainer.train_steps": 64_000,
          "Piecewise.base_learning_rate": 0.1, "Piecewise.boundaries": [32_000, 48_000],
          "Piecewise.multipliers": [0.1, 0.01], "ImagePreprocessing.train_crop": "pad_and_crop",
          "ImagePreprocessing.flip": True}


def wrn(dataset: str) -> dict:
  """Zagoruyko & Komodakis 2016: Nesterov 0.9, wd 5e-4, batch 128, lr 0.1 x0.2 at 60/120/160 of 200 epochs."""
  epoch = lambda e: steps(e, CIFAR_TRAIN, 128)  # noqa: E731
  return {"tfds.name": dataset, "Trainer.model": "WideResNet", "WideResNet.depth": 28, "WideResNet.width": 10,
          "WideResNet.dropout": 0.3, "Trainer.optimizer": "SGD", "SGD.momentum": 0.9, "SGD.nesterov": True,
          "L2.scale": 5e-4 / 2, "Trainer.batch_size": 128, "Trainer.train_steps": epoch(200),
          "Piecewise.base_learning_rate": 0.1, "Piecewise.boundaries": [epoch(60), epoch(120), epoch(160)],
          "Piecewise.multipliers": [0.2, 0.2 ** 2, 0.2 ** 3], "ImagePreprocessing.train_crop": "pad_and_crop",
          "ImagePreprocessing.flip": True}


def imagenet_epoch(epochs: float, batch_size: int) -> int:
  return steps(epochs, IMAGENET_TRAIN, batch_size)


EXPECTED = {
    "cifar10/resnet20.gin": he_cifar(20),
    "cifar10/resnet56.gin": he_cifar(56),
    # The paper's warm-up for ResNet-110: 0.01 for about 400 iterations, then 0.1 and the same steps.
    "cifar10/resnet110.gin": {**he_cifar(110), "Piecewise.base_learning_rate": 0.01,
                              "Piecewise.boundaries": [400, 32_000, 48_000],
                              "Piecewise.multipliers": [10, 1, 0.1]},
    "cifar10/wrn28_10.gin": wrn("cifar10"),
    "cifar100/wrn28_10.gin": wrn("cifar100"),
    # Goyal et al. 2017: batch 256, lr 0.1, momentum 0.9, wd 1e-4, /10 at epochs 30, 60, 80 of 90.
    "imagenet2012/resnet50.gin": {
        "tfds.name": "imagenet2012", "Trainer.model": "ImageNetResNet", "ImageNetResNet.depth": 50,
        "Trainer.optimizer": "SGD", "SGD.momentum": 0.9, "SGD.nesterov": False, "L2.scale": 1e-4 / 2,
        "Trainer.batch_size": 256, "Piecewise.base_learning_rate": 0.1,
        "Trainer.train_steps": imagenet_epoch(90, 256),
        "Piecewise.boundaries": [imagenet_epoch(e, 256) for e in (30, 60, 80)],
        "Piecewise.multipliers": [0.1, 0.01, 0.001], "ImagePreprocessing.train_crop": "random_resized",
        "ImagePreprocessing.image_size": 224},
    # DeiT (Touvron et al. 2021, Table 9): AdamW lr 5e-4 per 512, wd 0.05 (PyTorch AdamW = lr-coupled),
    # batch 1024, 300 epochs, 5 warm-up epochs, cosine to 1e-5, stochastic depth 0.1, no dropout,
    # label smoothing 0.1; timm's Mixup(0.8, 1.0, prob 1, switch 0.5), RandAugment rand-m9-mstd0.5-inc1,
    # random erasing 0.25, 3 repeats,
    # RandomResizedCrop (torchvision's sampler).
    "imagenet2012/vit_s16.gin": {
        "tfds.name": "imagenet2012", "Trainer.model": "ViT", "ViT.variant": "S", "ViT.patch_size": 16,
        "ViT.dropout": 0.0, "ViT.stochastic_depth_rate": 0.1, "Trainer.optimizer": "Adam",
        "Adam.epsilon": 1e-8, "DecoupledWeightDecay.rate": 0.05,
        "DecoupledWeightDecay.convention": "lr_coupled", "Trainer.batch_size": 1024,
        "WarmupCosine.base_learning_rate": 5e-4 * 1024 / 512,
        "Trainer.train_steps": imagenet_epoch(300, 1024),
        "WarmupCosine.warmup_steps": imagenet_epoch(5, 1024),
        "WarmupCosine.final_fraction": 1e-5 / (5e-4 * 1024 / 512),
        "softmax_cross_entropy.label_smoothing": 0.1, "MixupCutMix.mixup_alpha": 0.8,
        "MixupCutMix.cutmix_alpha": 1.0, "MixupCutMix.prob": 1.0, "MixupCutMix.switch_prob": 0.5,
        "ImagePreprocessing.rand_augment": "rand-m9-mstd0.5-inc1", "ImagePreprocessing.random_erasing": 0.25,
        "ImagePreprocessing.repeated_augmentation": 3, "ImagePreprocessing.crop_sampler": "torchvision"},
}


def test_every_recipe_is_checked():
  configs = os.path.join(REPO, "gin_configs")
  shipped = {os.path.relpath(path, configs)
             for directory in RECIPE_DIRS for path in glob.glob(os.path.join(configs, directory, "*.gin"))}
  # resnet.gin is the protocol the three depths include, checked through them.
  assert shipped - {"cifar10/resnet.gin"} == set(EXPECTED)


def _value(key: str):
  value = gin.query_parameter(key)
  if isinstance(value, gin.config.ConfigurableReference):
    return value.configurable.name
  return value


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_recipe_has_the_papers_hyperparameters(recipe):
  parsing.parse([os.path.join(REPO, "gin_configs", recipe)], [])
  try:
    for key, expected in EXPECTED[recipe].items():
      actual = _value(key)
      if isinstance(expected, float):
        assert math.isclose(actual, expected, rel_tol=1e-9), (recipe, key, actual, expected)
      elif isinstance(expected, list) and expected and isinstance(expected[0], float):
        assert actual == pytest.approx(expected, rel=1e-9), (recipe, key)
      else:
        assert actual == expected, (recipe, key, actual, expected)
  finally:
    gin.clear_config()


@pytest.mark.slow
def test_cifar_resnet_recipe_trains_on_mock_cifar10(tmp_path):
  """The CIFAR ResNet recipe (SGD + momentum, step schedule, L2, crop + flip, CIFAR-10's data config)
  trains end to end on TFDS's mock data through `trainer.data.mock` (what `--mock_data` uses): 2 steps of
  batch 8, at depth 8 to stay cheap."""
  pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
  import trainer
  from trainer.data import mock

  with mock.mock_tfds() as bindings:
    results = trainer.train([os.path.join(REPO, "gin_configs", "cifar10", "resnet20.gin")],
                            [*bindings, "CifarResNet.depth=8"], model_dir=str(tmp_path / "run"),
                            verbose=False)
  assert results.step == 2 and 0 <= results.metrics["test/accuracy"] <= 1
  assert math.isfinite(results.metrics["train/loss"]) and results.metrics["train/loss"] > 0
