r"""Training throughput of ResNet-20 on CIFAR-shaped data: Occam against Keras `model.fit`.

    python scripts/benchmark_models.py            # batch 128, 5 repeats (a few minutes on 2 cores)
    python scripts/benchmark_models.py --quick    # batch 32, 3 repeats: a smoke run

Both train the same model (`models.CifarResNet(depth=20)`, option A shortcuts) with SGD + momentum 0.9
at a constant 0.1 and the same global batch, on the same data: random uint8 images of shape
32x32x3 held in memory, fed by Occam's own pipeline (`trainer.data.pipeline.train_dataset`) with
the CIFAR augmentation `ImagePreprocessing(train_crop='pad_and_crop', flip=True)` and CIFAR-10's
normalization. No weight decay on either side. Neither is XLA-compiled (Occam's default; `fit` is
told `jit_compile=False`, since its 'auto' may compile). Both track loss and accuracy.

Occam is measured through its public seams, as `trainer.train` runs it (`occam.occam_variant`: one
compiled loop of `steps_per_loop` steps per host loop, the metrics and the Monitor's per-loop
statistics; not evaluation, checkpoints or summaries). Occam is timed twice: with the default Monitor,
whose per-loop statistics include a gradient norm on a 256-example probe batch (work `fit` does not
do), and with that probe cut to one example (`Monitor.sharpness_examples = 1`). `fit` runs with
`steps_per_execution` equal to Occam's `steps_per_loop` (`timing.fit_variant`). The variants are timed
interleaved (A B C A B C ...) after one untimed warm-up each; each figure is the median over repeats,
so load that comes and goes on a shared machine hits all alike. The ratios Occam / fit of steps per
second are printed with the target (>= 1.0).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from typing import Sequence

import gin
import numpy as np
import tensorflow as tf

import models
from trainer.benchmarks.occam import occam_variant
from trainer.benchmarks.timing import Variant, fit_variant, time_interleaved
from trainer.data import ArrayData, Splits, pipeline
from trainer.data.preprocessing import ImagePreprocessing

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
LEARNING_RATE = 0.1
MOMENTUM = 0.9
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# Occam's Monitor computes `norms/grad_l2` on a fixed probe batch after every host loop (256 examples by
# default): work `fit` does not do, amortized over steps_per_loop * batch_size training examples.
# One example is the cheapest probe gin allows; that variant isolates the training loop itself.
SMALL_PROBE = "Monitor.sharpness_examples = 1"


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much is timed: `loops` host loops of `steps_per_loop` steps per measurement, `repeats` times."""
  batch_size: int = 128
  steps_per_loop: int = 20
  loops: int = 1
  repeats: int = 5
  num_examples: int = 2048

  @property
  def steps(self) -> int:
    return self.steps_per_loop * self.loops


QUICK = Settings(batch_size=32, steps_per_loop=5, loops=2, repeats=3, num_examples=512)


def cifar_shaped(num_examples: int) -> Splits:
  """Uniform random uint8 images and labels: throughput does not depend on what is learned."""
  rng = np.random.default_rng(0)

  def split(n: int) -> ArrayData:
    return ArrayData(rng.integers(0, 256, size=(n, *IMAGE_SHAPE), dtype=np.uint8),
                     rng.integers(0, NUM_CLASSES, size=n).astype(np.int32))

  return Splits(name="cifar_shaped", train=split(num_examples), validation=split(64), test=split(64),
                num_classes=NUM_CLASSES, description=f"{num_examples} random uint8 32x32x3 images")


@gin.configurable
def cifar_shaped_data(num_examples: int = gin.REQUIRED) -> Splits:
  """Gin factory for `Trainer.data` (the builder calls it after seeding)."""
  return cifar_shaped(num_examples)


def occam_bindings(settings: Settings) -> list[str]:
  return [
      "Trainer.data = @cifar_shaped_data",
      f"cifar_shaped_data.num_examples = {settings.num_examples}",
      "Trainer.preprocessing = @ImagePreprocessing()",
      "ImagePreprocessing.train_crop = 'pad_and_crop'",
      "ImagePreprocessing.flip = True",
      f"ImagePreprocessing.mean = {CIFAR10_MEAN}",
      f"ImagePreprocessing.std = {CIFAR10_STD}",
      "Trainer.model = @CifarResNet",
      "CifarResNet.depth = 20",
      "Trainer.optimizer = @SGD",
      f"SGD.momentum = {MOMENTUM}",
      f"Trainer.learning_rate = {LEARNING_RATE}",
      f"Trainer.batch_size = {settings.batch_size}",
      f"Trainer.steps_per_loop = {settings.steps_per_loop}",
  ]


def keras_fit_variant(settings: Settings) -> Variant:
  """Keras `fit` on the same model, pipeline, augmentation, optimizer and batch."""
  tf.keras.utils.set_random_seed(0)
  model = models.CifarResNet(input_shape=IMAGE_SHAPE, num_outputs=NUM_CLASSES, depth=20)
  model.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                steps_per_execution=settings.steps_per_loop, jit_compile=False)
  preprocessing = ImagePreprocessing(train_crop="pad_and_crop", flip=True, mean=CIFAR10_MEAN, std=CIFAR10_STD)
  dataset = pipeline.train_dataset(cifar_shaped(settings.num_examples).train, seed=0, start_step=0,
                                   global_batch_size=settings.batch_size, preprocessing=preprocessing)
  return fit_variant(f"Keras fit (steps_per_execution={settings.steps_per_loop})", model, dataset,
                     steps=settings.steps, steps_per_execution=settings.steps_per_loop)


def measure(settings: Settings, model_dir: str) -> list[Variant]:
  """Occam with the default Monitor, Occam with a 1-example probe, and `fit`, timed side by side."""
  def occam(label: str, extra: Sequence[str] = ()) -> Variant:
    return occam_variant(label, occam_bindings(settings) + list(extra), model_dir=model_dir,
                         steps_per_loop=settings.steps_per_loop, loops=settings.loops)

  variants = [occam("Occam (default Monitor)"), occam("Occam (Monitor probe of 1 example)", [SMALL_PROBE]),
              keras_fit_variant(settings)]
  time_interleaved(variants, settings.repeats)
  return variants


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/benchmark_models.py`."""
  parser = argparse.ArgumentParser(prog="benchmark_models.py", description=__doc__.split("\n\n")[0].strip())
  parser.add_argument("--quick", action="store_true", help="batch 32, 3 repeats: a smoke run")
  parser.add_argument("--batch_size", type=int, help="global batch (default 128; --quick 32)")
  parser.add_argument("--repeats", type=int, help="timed rounds (default 5; --quick 3)")
  args = parser.parse_args(argv)
  settings = QUICK if args.quick else Settings()
  overrides = {"batch_size": args.batch_size, "repeats": args.repeats}
  settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
  with tempfile.TemporaryDirectory() as model_dir:
    variants = measure(settings, model_dir)
  *occams, fit = variants
  print(f"ResNet-20 (CifarResNet depth 20), CIFAR-shaped uint8 data, pad-and-crop + flip, SGD momentum "
        f"{MOMENTUM}, batch {settings.batch_size}, {settings.steps} steps per measurement "
        f"(steps_per_loop = steps_per_execution = {settings.steps_per_loop}), median of {settings.repeats} "
        f"interleaved repeats; TensorFlow {tf.__version__}")
  for variant in variants:
    wall, cpu = variant.rate
    print(f"  {variant.label}: {wall:.2f} steps/s wall ({wall * settings.batch_size:.0f} images/s), "
          f"{cpu:.2f} steps per CPU second")
  for occam in occams:
    ratio = occam.rate / fit.rate
    verdict = "meets" if ratio[0] >= 1.0 else "misses"
    print(f"{occam.label} / fit throughput: {ratio[0]:.2f}x wall, {ratio[1]:.2f}x CPU "
          f"(target >= 1.0x: {verdict})")
  return 0
