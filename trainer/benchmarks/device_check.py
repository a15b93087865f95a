r"""The check to run on the first GPU host or TPU VM: does Occam compile, train and feed there, and how fast.

    python scripts/device_check.py --strategy=tpu --tpu=local   # a Cloud TPU VM (about 5-10 minutes)
    python scripts/device_check.py --strategy=mirrored          # every GPU of this host
    python scripts/device_check.py --tiny                       # any machine: tiny sizes, a smoke run

It needs nothing but the installed project: the data are random uint8 images held in memory (and, for
the input section, random JPEGs written to a temporary directory). Four sections, each built as
`trainer.train` builds a run (`occam.build_run`) and timed per host loop through `TrainRunner.train`:

1. The full step: ResNet-50 at 224 px with CutMix, SAM, L2 and decoupled weight decay in
   `mixed_bfloat16`, XLA as `Trainer.jit_compile='auto'` decides on this device: the first loop
   (tracing and compiling included), then steady loops; every loss finite.
2. The Monitor's cost: the plain step (L2 only, bf16) with the default Monitor and with `MonitorOff`,
   timed interleaved (`timing.time_interleaved`).
3. ResNet-50 training: the plain step's steady images/s, in total and per replica.
4. Input: Occam's JPEG pipeline (`input_throughput`) at a small size, in images/s on this host,
   against what the training step consumes.

Each row of the printed table gives the figure, what it should be, and a verdict where one is
stated; send the whole output back (docs/TPU.md, "The device check").
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from typing import Sequence

import gin
import numpy as np
import tensorflow as tf

from trainer.benchmarks import input_throughput
from trainer.benchmarks.occam import build_run, occam_variant
from trainer.benchmarks.timing import cost, time_interleaved
from trainer.data import ArrayData, Splits
from trainer.loop import runners
from trainer.runtime import compat, devices
from trainer.runtime import strategy as strategy_lib

NUM_CLASSES = 1000
FULL_STEP_TERMS = ("Trainer.regularizers = [@L2(), @DecoupledWeightDecay(), @CutMix(), @SAM()]",
                   "DecoupledWeightDecay.rate = 5e-5", "CutMix.alpha = 1.0", "SAM.rho = 0.05")
# Steady ResNet-50 training throughput published for TensorFlow with XLA and mixed precision, per
# replica, as an order of magnitude to compare with (Occam also computes its metrics in the step).
RESNET50_IMAGES_PER_SECOND = "order of 250-400 per TPU v3/v4 core, 1,000+ per V100, 2,000+ per A100"


@dataclasses.dataclass(frozen=True)
class Settings:
  """Sizes of the check: the model, image side, per-replica batch, loops and the input benchmark's."""

  model_name: str
  model: tuple[str, ...]
  image_size: int
  batch_per_replica: int
  steps_per_loop: int
  loops: int
  repeats: int
  num_examples: int
  input: input_throughput.Settings


FULL = Settings(model_name="ResNet-50",
                model=("Trainer.model = @ImageNetResNet", "ImageNetResNet.depth = 50"), image_size=224,
                batch_per_replica=64, steps_per_loop=20, loops=2, repeats=2, num_examples=256,
                input=input_throughput.Settings(images=256, shards=8, batch_size=64, batches=8,
                                                warmup_batches=2, repeats=2))
TINY = Settings(model_name="ResNet-8 (CIFAR)",
                model=("Trainer.model = @CifarResNet", "CifarResNet.depth = 8"), image_size=16,
                batch_per_replica=4, steps_per_loop=2, loops=1, repeats=1, num_examples=32,
                input=input_throughput.QUICK)


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the report: the figure measured, what it should be, and PASS/FAIL/'' (no target)."""

  section: str
  figure: str
  value: str
  expected: str
  verdict: str = ""


@gin.configurable
def random_images(image_size: int = gin.REQUIRED, num_examples: int = gin.REQUIRED) -> Splits:
  """Uniform random uint8 images of `image_size` px and labels of 1000 classes, in memory."""
  rng = np.random.default_rng(0)

  def split(n: int) -> ArrayData:
    return ArrayData(rng.integers(0, 256, size=(n, image_size, image_size, 3), dtype=np.uint8),
                     rng.integers(0, NUM_CLASSES, size=n).astype(np.int32))

  return Splits(name="random_images", train=split(num_examples), validation=split(8), test=split(8),
                num_classes=NUM_CLASSES, description=f"{num_examples} random uint8 {image_size}px images")


def bindings(settings: Settings, strategy: tf.distribute.Strategy, *extra: str) -> list[str]:
  """A ResNet run on `random_images` in mixed_bfloat16, XLA left to 'auto', with `extra` bindings."""
  return [*settings.model, "Trainer.data = @random_images",
          f"random_images.image_size = {settings.image_size}",
          f"random_images.num_examples = {settings.num_examples}", "Trainer.optimizer = @SGD",
          "SGD.momentum = 0.9", "Trainer.learning_rate = 0.1", "L2.scale = 5e-5",
          "Trainer.mixed_precision = 'mixed_bfloat16'",
          f"Trainer.batch_size = {settings.batch_per_replica * strategy.num_replicas_in_sync}",
          f"Trainer.steps_per_loop = {settings.steps_per_loop}", *extra]


def check_full_step(settings: Settings, strategy: tf.distribute.Strategy, model_dir: str) -> list[Row]:
  """Builds the full step, times its first loop (compilation included) and steady loops; losses finite."""
  section = "full step (CutMix + SAM + L2 + decay, bf16)"
  started = time.perf_counter()
  run = build_run(bindings(settings, strategy, *FULL_STEP_TERMS), strategy, tempfile.mkdtemp(dir=model_dir))
  runner = runners.train_runner(run)
  first = runner.train(settings.steps_per_loop)
  first_seconds = time.perf_counter() - started
  started = time.perf_counter()
  outputs = [runner.train(settings.steps_per_loop) for _ in range(settings.loops)]
  steady = settings.loops * settings.steps_per_loop / (time.perf_counter() - started)
  bad = [output.first_bad_step for output in [first, *outputs] if output.nonfinite]
  xla = devices.describe_jit_compile(devices.AUTO, strategy)
  return [
      Row(section, "compiles and trains", f"yes; {xla}", "yes; XLA on for TPU and GPU", "PASS"),
      Row(section, "build + first loop (tracing, compiling)", f"{first_seconds:.0f} s", "< 300 s",
          _verdict(first_seconds < 300)),
      Row(section, "every loss, penalty and gradient finite", "yes" if not bad else f"no: step {bad[0]}",
          "yes", _verdict(not bad)),
      Row(section, "steady steps/s", f"{steady:.2f}", "about half the plain step's (SAM: two passes)"),
  ]


def check_monitor_and_training(settings: Settings, strategy: tf.distribute.Strategy,
                               model_dir: str) -> tuple[list[Row], float]:
  """The plain step with the default Monitor and with `MonitorOff`, interleaved; returns rows and images/s."""
  def variant(label: str, *extra: str):
    return occam_variant(label, bindings(settings, strategy, "Trainer.regularizers = [@L2()]", *extra),
                         steps_per_loop=settings.steps_per_loop, loops=settings.loops, model_dir=model_dir,
                         strategy=strategy)

  monitor_on, monitor_off = variant("Monitor on"), variant("Monitor off", "Trainer.monitor = @MonitorOff()")
  time_interleaved([monitor_on, monitor_off], settings.repeats)
  extra = cost(monitor_on, monitor_off)[0]
  batch = settings.batch_per_replica * strategy.num_replicas_in_sync
  images = monitor_on.rate[0] * batch
  return [
      Row("Monitor", "cost of the default Monitor (loops with it / without it - 1)", f"{extra:+.1%}", "<= 5%",
          _verdict(extra <= 0.05)),
      Row("training", f"{settings.model_name} at {settings.image_size} px, batch {batch}: images/s",
          f"{images:,.0f}", "(see per replica)"),
      Row("training", "images/s per replica", f"{images / strategy.num_replicas_in_sync:,.0f}",
          RESNET50_IMAGES_PER_SECOND),
  ], images


def check_input(settings: Settings, trained_images_per_second: float,
                strategy: tf.distribute.Strategy) -> list[Row]:
  """Occam's JPEG pipeline on this host against what training consumes (per host)."""
  with tempfile.TemporaryDirectory() as directory:
    files = input_throughput.write_jpeg_shards(directory, settings.input)
    occam, *_ = input_throughput.measure(files, settings.input)
  rate = occam.rate[0]
  needed = trained_images_per_second / hosts(strategy)
  return [
      Row("input", "Occam's JPEG pipeline: images/s on this host", f"{rate:,.0f}",
          f">= {needed:,.0f} (what this host's replicas train per second)", _verdict(rate >= needed)),
      Row("input", "per core", f"{rate / input_throughput.cores():,.0f}", "order of 100-200 on a VM core"),
  ]


def hosts(strategy: tf.distribute.Strategy) -> int:
  """The hosts the strategy trains on: a TPU strategy's own count (a pod has no TF_CONFIG), else the
  workers of TF_CONFIG (MultiWorkerMirroredStrategy), at least 1."""
  num_hosts = getattr(strategy.extended, "num_hosts", None)
  if num_hosts is not None:
    return int(num_hosts)
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  return max(1, len(resolver.cluster_spec().as_dict().get("worker", [])))


def _verdict(ok: bool) -> str:
  return "PASS" if ok else "FAIL"


def table(rows: Sequence[Row]) -> list[str]:
  """The report: `section | figure | value | should be | verdict`, columns aligned."""
  header = Row("section", "figure", "value", "should be", "verdict")
  cells = [dataclasses.astuple(row) for row in [header, *rows]]
  widths = [max(len(cell[i]) for cell in cells) for i in range(4)]
  return [" | ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + " | " + row[4]
          for row in cells]


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/device_check.py`."""
  parser = argparse.ArgumentParser(prog="device_check.py", description=__doc__.split("\n\n")[0].strip())
  parser.add_argument("--strategy", default="default", choices=strategy_lib.STRATEGIES,
                      help="tpu on a TPU VM, mirrored on a GPU host (default: default)")
  parser.add_argument("--tpu", default=None, help="with --strategy=tpu: local on a TPU VM, or a name/address")
  parser.add_argument("--tiny", action="store_true", help="tiny sizes (any machine): a smoke run")
  args = parser.parse_args(argv)
  settings = TINY if args.tiny else FULL
  strategy = strategy_lib.create(args.strategy, tpu=args.tpu or ("local" if args.strategy == "tpu" else None))
  started = time.perf_counter()
  with tempfile.TemporaryDirectory() as model_dir:
    rows = check_full_step(settings, strategy, model_dir)
    monitor_rows, images_per_second = check_monitor_and_training(settings, strategy, model_dir)
    rows += monitor_rows
  rows += check_input(settings, images_per_second, strategy)
  kind = devices.device_kind(strategy)
  print(f"\ndevice check: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replicas on {kind} "
        f"({', '.join(d.device_type for d in tf.config.list_logical_devices())[:200]}); TensorFlow "
        f"{tf.__version__}, Keras {compat.KERAS_VERSION}; {time.perf_counter() - started:.0f} s"
        f"{'; --tiny: the numbers mean nothing' if args.tiny else ''}")
  print("\n".join(table(rows)))
  failed = [row for row in rows if row.verdict == "FAIL"]
  print(f"\n{len(failed)} of {sum(bool(row.verdict) for row in rows)} checks failed" if failed else
        "\nevery check passed")
  return 1 if failed and not args.tiny else 0  # --tiny's figures mean nothing: a smoke run exits 0
