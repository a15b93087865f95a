r"""Training throughput of ResNets on random images: Occam against Keras `model.fit`, and the Monitor's share.

    python scripts/benchmark_models.py                   # ResNet-20, 32 px, batch 128, 5 repeats
    python scripts/benchmark_models.py --model=resnet50  # ResNet-50, 64 px, batch 32
    python scripts/benchmark_models.py --quick           # batch 32, 3 repeats: a smoke run

Both train the same model with SGD + momentum 0.9 at a constant 0.1 and the same global batch, on
the same data: random uint8 images held in memory, fed by Occam's own pipeline
(`trainer.data.pipeline.train_dataset`) with the CIFAR augmentation `ImagePreprocessing(train_crop=
'pad_and_crop', flip=True)` and CIFAR-10's normalization. `resnet20`: `models.CifarResNet(depth=20)`
(option A shortcuts) on 32x32x3 images, 10 classes; `resnet50`: `models.ImageNetResNet(depth=50)` on
64x64x3 images, 1000 classes (downsampled-ImageNet scale). No weight decay on either side. Neither is
XLA-compiled on any device: Occam is bound `Trainer.jit_compile = False` and `fit` told
`jit_compile=False` (both 'auto's compile on a GPU). Both track loss and accuracy.

Occam is measured through its public seams, as `trainer.train` runs it (`occam.occam_variant`: one
compiled loop of `steps_per_loop` steps per host loop, the metrics and the Monitor's loop-end work; not
evaluation, checkpoints or summaries), three times: with the Monitor's weight statistics but no
gradient-norm probe (`Monitor.grad_norm_every = 0`), with the probe (256 examples, a forward and
backward pass) at every loop end (`Monitor.grad_norm_every = 1`, the default before the probe had its
own interval), and with the Monitor off (`occam.MonitorOff`). `fit` runs with `steps_per_execution`
equal to Occam's `steps_per_loop` (`timing.fit_variant`). The variants are timed interleaved
(A B C D A B C D ...) after one untimed warm-up each; each figure is the median over repeats, so load
that comes and goes on a shared machine hits all alike. Printed: the ratios Occam / fit of steps per
second with the target (>= 1.0), the Monitor's share of each Occam variant's time (the seconds
inside its calls, wall and CPU), and the ratio with the probe every 100, 200 and 500 steps, its
measured cost per probe spread over the interval (the default is `Monitor.grad_norm_every`), to `fit`
and to Occam with the Monitor off; then each Monitor variant's ratio to the Monitor off, as measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import tempfile
from typing import Callable, Sequence

import gin
import numpy as np
import tensorflow as tf

import models
from trainer.benchmarks.occam import OccamVariant, occam_variant
from trainer.benchmarks.timing import Variant, fit_variant, time_interleaved
from trainer.data import ArrayData, Splits, pipeline
from trainer.data.preprocessing import ImagePreprocessing
from trainer.metrics.monitor import Monitor

LEARNING_RATE = 0.1
MOMENTUM = 0.9
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass(frozen=True)
class Scale:
  """A model at an image size: its gin bindings, and the same model for `fit`."""
  title: str
  image_shape: tuple[int, int, int]
  num_classes: int
  model_bindings: tuple[str, ...]
  keras_model: Callable[..., tf.keras.Model]
  batch_size: int


SCALES = {
    "resnet20": Scale("ResNet-20 (CifarResNet depth 20), 32x32x3", (32, 32, 3), 10,
                      ("Trainer.model = @CifarResNet", "CifarResNet.depth = 20"),
                      functools.partial(models.CifarResNet, depth=20), batch_size=128),
    "resnet50": Scale("ResNet-50 (ImageNetResNet depth 50), 64x64x3", (64, 64, 3), 1000,
                      ("Trainer.model = @ImageNetResNet", "ImageNetResNet.depth = 50"),
                      functools.partial(models.ImageNetResNet, depth=50), batch_size=32),
}
# The Monitor's gradient-norm probe never, and at every loop end (the default before it had an interval).
NO_PROBE = "Monitor.grad_norm_every = 0"
PROBE_EVERY_LOOP = "Monitor.grad_norm_every = 1"
MONITOR_OFF = "Trainer.monitor = @MonitorOff()"
# Intervals (steps) at which the default Monitor's throughput is shown with the probe's cost amortized.
PROBE_INTERVALS = (100, 200, 500)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much is timed: `loops` host loops of `steps_per_loop` steps per measurement, `repeats` times."""
  scale: Scale = SCALES["resnet20"]
  batch_size: int = 128
  steps_per_loop: int = 20
  loops: int = 1
  repeats: int = 5
  num_examples: int = 2048

  @property
  def steps(self) -> int:
    return self.steps_per_loop * self.loops


QUICK = Settings(batch_size=32, steps_per_loop=5, loops=2, repeats=3, num_examples=512)


def random_images(scale: Scale, num_examples: int) -> Splits:
  """Uniform random uint8 images and labels: throughput does not depend on what is learned."""
  rng = np.random.default_rng(0)

  def split(n: int) -> ArrayData:
    return ArrayData(rng.integers(0, 256, size=(n, *scale.image_shape), dtype=np.uint8),
                     rng.integers(0, scale.num_classes, size=n).astype(np.int32))

  shape = "x".join(map(str, scale.image_shape))
  return Splits(name="random_images", train=split(num_examples), validation=split(64), test=split(64),
                num_classes=scale.num_classes, description=f"{num_examples} random uint8 {shape} images")


@gin.configurable
def random_image_data(scale: str = gin.REQUIRED, num_examples: int = gin.REQUIRED) -> Splits:
  """Gin factory for `Trainer.data` (the builder calls it after seeding)."""
  return random_images(SCALES[scale], num_examples)


def occam_bindings(settings: Settings) -> list[str]:
  scale = next(name for name, value in SCALES.items() if value == settings.scale)
  return [
      "Trainer.data = @random_image_data",
      f"random_image_data.scale = '{scale}'",
      f"random_image_data.num_examples = {settings.num_examples}",
      "Trainer.preprocessing = @ImagePreprocessing()",
      "ImagePreprocessing.train_crop = 'pad_and_crop'",
      "ImagePreprocessing.flip = True",
      f"ImagePreprocessing.mean = {CIFAR10_MEAN}",
      f"ImagePreprocessing.std = {CIFAR10_STD}",
      *settings.scale.model_bindings,
      "Trainer.optimizer = @SGD",
      f"SGD.momentum = {MOMENTUM}",
      f"Trainer.learning_rate = {LEARNING_RATE}",
      f"Trainer.batch_size = {settings.batch_size}",
      f"Trainer.steps_per_loop = {settings.steps_per_loop}",
      "Trainer.jit_compile = False",  # as `fit` is told below; 'auto' would compile on a GPU
  ]


def keras_fit_variant(settings: Settings) -> Variant:
  """Keras `fit` on the same model, pipeline, augmentation, optimizer and batch."""
  tf.keras.utils.set_random_seed(0)
  scale = settings.scale
  model = scale.keras_model(input_shape=scale.image_shape, num_outputs=scale.num_classes)
  model.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                steps_per_execution=settings.steps_per_loop, jit_compile=False)
  preprocessing = ImagePreprocessing(train_crop="pad_and_crop", flip=True, mean=CIFAR10_MEAN, std=CIFAR10_STD)
  dataset = pipeline.train_dataset(random_images(scale, settings.num_examples).train, seed=0, start_step=0,
                                   global_batch_size=settings.batch_size, preprocessing=preprocessing)
  return fit_variant(f"Keras fit (steps_per_execution={settings.steps_per_loop})", model, dataset,
                     steps=settings.steps, steps_per_execution=settings.steps_per_loop)


def measure(settings: Settings, model_dir: str) -> list[Variant]:
  """Occam with the Monitor without its probe, with the probe every loop, with the Monitor off, and `fit`,
  timed side by side."""
  def occam(label: str, extra: Sequence[str] = ()) -> OccamVariant:
    return occam_variant(label, occam_bindings(settings) + list(extra), model_dir=model_dir,
                         steps_per_loop=settings.steps_per_loop, loops=settings.loops)

  variants = [occam("Occam (Monitor, no gradient-norm probe)", [NO_PROBE]),
              occam("Occam (Monitor, the probe every loop)", [PROBE_EVERY_LOOP]),
              occam("Occam (Monitor off)", [MONITOR_OFF]), keras_fit_variant(settings)]
  time_interleaved(variants, settings.repeats)
  return variants


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/benchmark_models.py`."""
  parser = argparse.ArgumentParser(prog="benchmark_models.py", description=__doc__.split("\n\n")[0].strip())
  parser.add_argument("--model", choices=sorted(SCALES), default="resnet20", help="model and image size")
  parser.add_argument("--quick", action="store_true", help="batch 32, 3 repeats: a smoke run")
  parser.add_argument("--batch_size", type=int, help="global batch (default: the model's; --quick 32)")
  parser.add_argument("--repeats", type=int, help="timed rounds (default 5; --quick 3)")
  args = parser.parse_args(argv)
  scale = SCALES[args.model]
  settings = dataclasses.replace(QUICK if args.quick else Settings(batch_size=scale.batch_size), scale=scale)
  overrides = {"batch_size": args.batch_size, "repeats": args.repeats}
  settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
  with tempfile.TemporaryDirectory() as model_dir:
    variants = measure(settings, model_dir)
  *occams, fit = variants
  print(f"{scale.title}, random uint8 data, pad-and-crop + flip, SGD momentum {MOMENTUM}, batch "
        f"{settings.batch_size}, {settings.steps} steps per measurement (steps_per_loop = "
        f"steps_per_execution = {settings.steps_per_loop}), median of {settings.repeats} interleaved "
        f"repeats; TensorFlow {tf.__version__}")
  for variant in variants:
    wall, cpu = variant.rate
    print(f"  {variant.label}: {wall:.2f} steps/s wall ({wall * settings.batch_size:.0f} images/s), "
          f"{cpu:.2f} steps per CPU second")
  for occam in occams:
    ratio = occam.rate / fit.rate
    verdict = "meets" if ratio[0] >= 1.0 else "misses"
    wall_share, cpu_share = occam.monitor_share
    print(f"{occam.label} / fit throughput: {ratio[0]:.2f}x wall, {ratio[1]:.2f}x CPU (target >= 1.0x: "
          f"{verdict}); the Monitor's share of the time: {wall_share:.1%} wall, {cpu_share:.1%} CPU")
  no_probe, every_loop, off = occams
  default_interval = Monitor().grad_norm_every
  for reference in (fit, off):
    for interval, ratio in amortized_ratios(no_probe, every_loop, reference, settings).items():
      default = " (the default)" if interval == default_interval else ""
      print(f"Occam (Monitor, the probe every {interval} steps{default}, its cost amortized) / "
            f"{_short(reference)}: {ratio[0]:.2f}x wall, {ratio[1]:.2f}x CPU")
  for occam in (no_probe, every_loop):
    wall, cpu = occam.rate / off.rate
    print(f"{occam.label} / {off.label}: {wall:.2f}x wall, {cpu:.2f}x CPU (measured side by side)")
  return 0


def _short(variant: Variant) -> str:
  return "fit" if variant.label.startswith("Keras fit") else variant.label


def amortized_ratios(no_probe: OccamVariant, every_loop: OccamVariant, reference: Variant,
                     settings: Settings) -> dict[int, np.ndarray]:
  """{interval: [wall, CPU] ratio to `reference` (`fit`, or Occam with the Monitor off)} of the Monitor
  with its gradient-norm probe every `interval` steps: one probe costs what the Monitor of `every_loop`
  spends per loop beyond `no_probe`'s, spread over `interval` steps on top of `no_probe`'s time per step."""
  probe = (every_loop.monitor_median - no_probe.monitor_median) / settings.loops
  per_step = np.median(np.array(no_probe.seconds), axis=0) / no_probe.work
  return {interval: (1 / (per_step + probe / interval)) / reference.rate for interval in PROBE_INTERVALS}
