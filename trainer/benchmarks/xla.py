r"""XLA where it pays: Occam with `jit_compile` off and on against Keras `fit`'s default, per model.

    python scripts/benchmark_models.py --jit           # MLP, ResNet-20, ViT-Ti/4 at 32 px (~15 min, 2 cores)
    python scripts/benchmark_models.py --jit --quick   # tiny sizes, one repeat: a smoke run

Three workloads, each with three variants built together and timed interleaved (`timing`): Occam
with `Trainer.jit_compile = False`, Occam with `True` (both through `occam.occam_variant`, as
`trainer.train` runs them, without the Monitor's gradient-norm probe so that the step is what is
timed: `resnet.NO_PROBE`), and Keras `fit` as a user gets it (`compile()` with no `jit_compile` and
no `steps_per_execution`: 'auto' and one step per call). The models: the compute-bound MLP of
`scripts/benchmark.py` (784-1024-1024-10, batch 256, Adam, L2), ResNet-20 and ViT-Ti with 4x4 patches,
both on 32x32x3 uint8 images with CIFAR augmentation and SGD + momentum (`resnet.occam_bindings`).
What the table says decides `trainer.runtime.devices.JIT_COMPILE`'s default for the CPU (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
from typing import Callable, Sequence

import tensorflow as tf

import models
from trainer.benchmarks import mlp, resnet
from trainer.benchmarks.mlp import ModelSpec
from trainer.benchmarks.occam import occam_variant
from trainer.benchmarks.timing import Variant, fit_variant, time_interleaved
from trainer.data import pipeline
from trainer.data.preprocessing import ImagePreprocessing
from trainer.runtime import compat

VIT_BINDINGS = ("Trainer.model = @ViT", "ViT.variant = 'Ti'", "ViT.patch_size = 4")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Sizes: the MLP's spec, the image models' batch and steps per loop, repeats, examples."""

  mlp: ModelSpec
  resnet: resnet.Settings
  vit: resnet.Settings
  repeats: int

  def workloads(self) -> list[Workload]:
    return [mlp_workload(self.mlp), image_workload("ResNet-20", self.resnet, ()),
            image_workload("ViT-Ti/4", self.vit, VIT_BINDINGS)]


FULL = Settings(mlp=ModelSpec("MLP", 784, (1024, 1024), 256, steps_per_loop=20, loops_per_measurement=1),
                resnet=resnet.Settings(batch_size=32, steps_per_loop=10, num_examples=1024),
                vit=resnet.Settings(batch_size=16, steps_per_loop=4, num_examples=512), repeats=3)
QUICK = Settings(mlp=ModelSpec("MLP", 784, (32,), 16, steps_per_loop=2, loops_per_measurement=1),
                 resnet=resnet.Settings(batch_size=8, steps_per_loop=2, num_examples=64),
                 vit=resnet.Settings(batch_size=8, steps_per_loop=2, num_examples=64), repeats=1)


@dataclasses.dataclass(frozen=True)
class Workload:
  """One model: what it is, Occam's bindings (a `jit_compile` among them is overridden), `fit`'s default."""

  name: str
  description: str
  bindings: tuple[str, ...]
  steps_per_loop: int
  fit_default: Callable[[], Variant]


def mlp_workload(spec: ModelSpec) -> Workload:
  examples = 4 * spec.batch_size * spec.steps_per_loop

  def fit_default() -> Variant:
    tf.keras.utils.set_random_seed(0)
    model = models.MLP(hidden_sizes=spec.hidden, num_outputs=mlp.NUM_CLASSES)
    model.compile(optimizer=tf.keras.optimizers.Adam(mlp.LEARNING_RATE),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return fit_variant("fit default", model, mlp.train_dataset(spec, examples), steps=spec.steps_per_loop,
                       steps_per_execution=1)

  return Workload(spec.name, spec.describe(), tuple(mlp.occam_bindings(spec, examples)), spec.steps_per_loop,
                  fit_default)


def image_workload(name: str, settings: resnet.Settings, model_bindings: Sequence[str]) -> Workload:
  """ResNet-20 (`resnet.occam_bindings`) or another model on the same CIFAR-shaped data and optimizer."""
  bindings = resnet.occam_bindings(settings) + list(model_bindings)

  def fit_default() -> Variant:
    tf.keras.utils.set_random_seed(0)
    shape, classes = settings.scale.image_shape, settings.scale.num_classes
    model = (models.ViT(input_shape=shape, num_outputs=classes, variant="Ti", patch_size=4) if model_bindings
             else models.CifarResNet(input_shape=shape, num_outputs=classes, depth=20))
    model.compile(optimizer=tf.keras.optimizers.SGD(resnet.LEARNING_RATE, momentum=resnet.MOMENTUM),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    preprocessing = ImagePreprocessing(train_crop="pad_and_crop", flip=True, mean=resnet.CIFAR10_MEAN,
                                       std=resnet.CIFAR10_STD)
    dataset = pipeline.train_dataset(resnet.random_images(settings.scale, settings.num_examples).train,
                                     seed=0, start_step=0,
                                     global_batch_size=settings.batch_size, preprocessing=preprocessing)
    return fit_variant("fit default", model, dataset, steps=settings.steps_per_loop, steps_per_execution=1)

  description = (f"{name} on 32x32x3 uint8 images, pad-and-crop + flip, SGD momentum {resnet.MOMENTUM}, "
                 f"batch {settings.batch_size}, {settings.steps_per_loop} steps per loop")
  return Workload(name, description, tuple(bindings), settings.steps_per_loop, fit_default)


def occam_bindings(workload: Workload, jit: bool) -> list[str]:
  """Occam's run of `workload` with `jit_compile` bound to `jit`, without the gradient-norm probe."""
  return [*workload.bindings, resnet.NO_PROBE, f"Trainer.jit_compile = {jit}"]


def measure(workload: Workload, repeats: int, model_dir: str) -> list[Variant]:
  """Occam jit off, Occam jit on and `fit`'s default on one workload, timed side by side."""
  def occam(jit: bool) -> Variant:
    return occam_variant(f"Occam jit_compile={jit}", occam_bindings(workload, jit),
                         model_dir=model_dir, steps_per_loop=workload.steps_per_loop, loops=1)

  variants = [occam(False), occam(True), workload.fit_default()]
  time_interleaved(variants, repeats)
  return variants


def table(results: Sequence[tuple[Workload, Sequence[Variant]]]) -> list[str]:
  """One line per workload: steps/s of each variant, XLA's speed-up, the best Occam against `fit`."""
  lines = ["model | Occam jit off | Occam jit on | fit default | jit on / off | best Occam / fit default"]
  for workload, (off, on, fit) in results:
    best = on if on.rate[0] > off.rate[0] else off
    lines.append(f"{workload.name} | {off.rate[0]:.2f} | {on.rate[0]:.2f} | {fit.rate[0]:.2f} | "
                 f"{on.rate[0] / off.rate[0]:.2f}x | {best.rate[0] / fit.rate[0]:.2f}x "
                 f"({'jit on' if best is on else 'jit off'})")
  return lines


def fit_default_uses_xla() -> bool:
  """Whether Keras `fit`'s default (`jit_compile='auto'`) compiles with XLA on this machine."""
  model = models.MLP(hidden_sizes=(4,), num_outputs=2)
  model.compile(optimizer="sgd", loss="mse")
  return bool(model.jit_compile)


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/benchmark_models.py --jit`."""
  parser = argparse.ArgumentParser(prog="benchmark_models.py --jit", description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
  parser.add_argument("--repeats", type=int, help="timed rounds (default 3; --quick 1)")
  args = parser.parse_args(argv)
  settings = QUICK if args.quick else FULL
  if args.repeats:
    settings = dataclasses.replace(settings, repeats=args.repeats)
  results = []
  with tempfile.TemporaryDirectory() as model_dir:
    for workload in settings.workloads():
      print(f"{workload.name}: {workload.description}", flush=True)
      results.append((workload, measure(workload, settings.repeats, model_dir)))
  print(f"\nsteps/s (wall), median of {settings.repeats} interleaved repeats; machine: {os.cpu_count()} "
        f"CPUs, {platform.machine()}; TensorFlow {tf.__version__}, Keras {compat.KERAS_VERSION}; "
        f"fit's default compiles with XLA here: {fit_default_uses_xla()}")
  print("\n".join(table(results)))
  return 0
