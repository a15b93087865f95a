"""The shipped recipes on 8 and 32 replicas (a v3-8 or v4-8, and a v4-32 pod slice), proven on logical CPUs.

Every complete recipe's batch sizes are checked against both replica counts with the pipeline's own
rules; one recipe per distinct model, data pipeline, set of terms and batch sizes (tests/pod_recipes.py
says which, and what it shrinks) trains two steps and evaluates in a subprocess over 8 logical devices,
and the cheapest of them that show both batch rules in another over 32 (`SUITE_CASES`).
"""

from __future__ import annotations

import glob
import inspect
import json
import math
import os
import re
import subprocess
import sys

import gin
import pytest
import tensorflow as tf

from tests import pod_recipes
from trainer.config import parsing
from trainer.data import pipeline
from trainer.data.preprocessing import ImagePreprocessing, example_seed
from trainer.loop.settings import Trainer

REPO = pod_recipes.REPO
CONFIGS = os.path.join(REPO, "gin_configs")
# Fragments that other configs include, not runs of their own.
PARTS = {"base.gin", "cifar10/resnet.gin", "mnist1d/paper.gin", "experiments/noisy_digits.gin"}
# Recipes sized for one host: their papers' batch sizes do not split over 8 replicas.
ONE_HOST = {"mnist1d/", "experiments/"}
POD_SIZES = (8, 32)


def complete_recipes() -> list[str]:
  paths = glob.glob(os.path.join(CONFIGS, "*.gin")) + glob.glob(os.path.join(CONFIGS, "*", "*.gin"))
  names = {os.path.relpath(path, CONFIGS) for path in paths}
  return sorted(name for name in names - PARTS if not name.startswith("data/"))  # data/: what, not a run


def batch_sizes(recipe: str) -> tuple[int, int]:
  """The recipe's (training, evaluation) global batch sizes, as gin resolves them (defaults included)."""
  parsing.parse([os.path.join(CONFIGS, recipe)], [])

  def bound(name: str) -> int:
    try:
      return gin.query_parameter(f"Trainer.{name}")
    except ValueError:  # unbound: Trainer's default
      return inspect.signature(Trainer.__init__).parameters[name].default
  try:
    return bound("batch_size"), bound("eval_batch_size")
  finally:
    gin.clear_config()


@pytest.mark.parametrize("recipe", complete_recipes())
def test_each_recipe_fits_8_and_32_replicas_or_is_refused_naming_the_sizes_that_do(recipe):
  """A pod recipe's training batch splits over 8 and 32 replicas; its evaluation batch never has to
  (it is rounded up and padded with weight-0 examples). The one-host recipes (MNIST-1D's batch 100, the
  experiments' full batch of 500) are refused with the nearest sizes that work."""
  train, evaluation = batch_sizes(recipe)
  for replicas in POD_SIZES:
    padded = pipeline.eval_batch_size_for(evaluation, replicas)
    assert padded % replicas == 0 and evaluation <= padded < evaluation + replicas
    if not recipe.startswith(tuple(ONE_HOST)):
      assert pipeline.per_replica_batch_size(train, replicas) * replicas == train
      continue
    below = train // replicas * replicas
    with pytest.raises(ValueError, match=f"e.g. use {below} or {below + replicas}$"):
      pipeline.per_replica_batch_size(train, replicas)


@pytest.mark.parametrize("sampler", ["inception", "torchvision"])
def test_imagenet_augmentation_keeps_the_channels_of_images_of_any_size(sampler):
  """ImageNet's images have no fixed size; the random-resized crop must still hand RandAugment (which
  works per channel) and the model images of static shape. Found by the ViT recipe on mock data."""
  augmentation = ImagePreprocessing(image_size=32, train_crop="random_resized", crop_sampler=sampler,
                                    rand_augment="rand-m9-mstd0.5-inc1")
  example = tf.function(lambda image: augmentation.example(image, example_seed(0, tf.constant(0, tf.int64))),
                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  assert example.get_concrete_function().structured_outputs.shape == (32, 32, 3)


# On 8 replicas the suite trains every recipe of `pod_recipes.SHRINK`; on 32, where every recipe costs
# 2.5 to 4.4 times its CPU on 8 (tracing and instantiating one copy of each step per replica), the ones
# that fit beside it on a second core: quickstart, CIFAR-10's ResNet, CIFAR-100's WRN (evaluation batch
# 1000 padded to 1024) and claim 9's CutMix recipe (training batch 500 refused and run at 480, evaluation
# batch 540 padded to 544). ImageNet's two recipes and MNIST-1D's GRU on 32 are run by hand,
# `python -m tests.pod_recipes 32 OUT.json` (docs/TESTING.md; their figures are in docs/TPU.md).
SUITE_CASES = {8: list(pod_recipes.SHRINK),
               32: ["quickstart.gin", "cifar10/resnet20.gin", "cifar100/wrn28_10.gin",
                    "experiments/claim9_cutmix.gin"]}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_recipes_train_two_steps_and_evaluate_on_8_and_32_replicas(tmp_path):
  """Both replica counts at once, one process each: each uses one core of a two-core machine."""
  pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
  outs = {replicas: str(tmp_path / f"outcomes_{replicas}.json") for replicas in SUITE_CASES}
  processes = {replicas: subprocess.Popen([sys.executable, "-m", "tests.pod_recipes", str(replicas), out,
                                           *SUITE_CASES[replicas]],
                                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True)
               for replicas, out in outs.items()}
  for process in processes.values():
    output, _ = process.communicate(timeout=pod_recipes.HANG_SECONDS + 300)  # its watchdog fires first
    assert process.returncode == 0, output[-3000:]
  for replicas, out in outs.items():
    with open(out) as file:
      check_outcomes(json.load(file), replicas, SUITE_CASES[replicas])


def check_outcomes(outcomes: dict, replicas: int, recipes: list[str]) -> None:
  """Every recipe trained 2 steps at its own batch sizes (or, refused, at the size its message named)."""
  assert set(outcomes) == set(recipes)
  for recipe, outcome in outcomes.items():
    train, evaluation = batch_sizes(recipe)
    if train % replicas:  # refused before anything was written, then run at the size the message named
      assert not outcome["wrote"], recipe
      assert re.search(rf"Trainer.batch_size: global batch size {train} must be a positive multiple of the "
                       rf"number of replicas \({replicas}\)", outcome["refused"]), outcome["refused"]
      train = outcome["ran_at"]
      assert train % replicas == 0
    else:
      assert "refused" not in outcome, recipe
    assert (outcome["replicas"], outcome["batch_size"], outcome["eval_batch_size"], outcome["step"]) == (
        replicas, train, evaluation, 2), recipe
    metrics = outcome["metrics"]
    for split in ("eval", "test"):
      assert 0 <= metrics[f"{split}/accuracy"] <= 1 and math.isfinite(metrics[f"{split}/loss"]), recipe
    assert math.isfinite(metrics["train/loss"]) and metrics["train/loss"] > 0, recipe
