r"""Occam's data-at-scale benchmark: memory and start-up flat in the dataset size, input vs model speed.

    python scripts/benchmark_data.py                       # 10k, 100k and 1M CIFAR-shaped images
    python scripts/benchmark_data.py --sizes=10000,100000 --steps=20
    python scripts/benchmark_data.py --quick               # smoke run: tiny sizes, numbers meaningless

For each size N and each way of reading (`npy`: memory-mapped uint8 arrays, read by index; `tfrecord`:
16 raw-uint8 TFRecord shards, streamed; `tfds`: a TFDS dataset prepared here as TFRecord, 16 shards per
split, read by name and streamed), it writes N random 32x32x3 uint8 images with labels to a
scratch directory, then trains a CIFAR ResNet (3 stages of 3 residual blocks, 16/32/64 channels:
ResNet-20's layout) for `--steps` steps through the real command line (`python -m trainer.main`) with
the CIFAR augmentation (pad-4 crop, flip, normalization), in a child process whose peak resident
memory (VmHWM, read by the child as it exits: `trainer.benchmarks.peak_rss`) and time to the end of
the first training loop are recorded. The ratios between sizes are what to read: memory and time to
first step should not grow with N.

Start-up, side by side: for each streamed format, the smallest and the largest N are started in turn
(`--startup_repeats` times each, alternating, so both see the same load) with one step per loop, and
the medians of each start-up phase (imports; building the run, where the data are opened and the
first examples read; the first step) are compared, in wall and in the child's own CPU seconds.

Then, side by side in this process on the largest size: the input pipeline alone (examples/s of
`trainer.data.pipeline.train_dataset` with the same augmentation, nothing consuming but a loop that
pulls batches) against what the model consumed in training (the child's `perf/examples_per_sec`),
and the cost of resuming a streamed split deep into an epoch (time to the first batch at step 0 vs
at 95% of an epoch, where the stream must skip the records already consumed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from trainer import data
from trainer.benchmarks import startup
from trainer.benchmarks.children import REPO, time_child
from trainer.data import ArrayData, ImagePreprocessing, pipeline
from trainer.metrics import events

SHAPE = (32, 32, 3)
EVAL_EXAMPLES = 1000
SHARDS = 16
CHUNK = 50_000  # images generated at a time while writing
AUGMENTATION = dict(train_crop="pad_and_crop", padding=4, flip=True, mean=(0.49, 0.48, 0.45),
                    std=(0.25, 0.24, 0.26))
FORMATS = ("npy", "tfrecord", "tfds")
STREAMED = ("tfrecord", "tfds")
TFDS_NAME = "occam_scale_images"


def write_npy(directory: str, name: str, count: int, seed: int) -> tuple[str, str]:
  """`count` random images as a .npy file written in chunks (never all in memory), and their labels."""
  rng = np.random.default_rng(seed)
  features_path, labels_path = (os.path.join(directory, f"{name}_{part}.npy") for part in ("x", "y"))
  features = np.lib.format.open_memmap(features_path, mode="w+", dtype=np.uint8, shape=(count, *SHAPE))
  for start in range(0, count, CHUNK):
    stop = min(count, start + CHUNK)
    features[start:stop] = rng.integers(0, 256, size=(stop - start, *SHAPE), dtype=np.uint8)
  features.flush()
  del features
  np.save(labels_path, rng.integers(0, 10, size=count).astype(np.int32))
  return features_path, labels_path


def random_images(count: int, seed: int) -> Iterator[tuple[np.ndarray, np.integer]]:
  """(image, label) pairs of `count` random images, generated CHUNK at a time."""
  rng = np.random.default_rng(seed)
  for start in range(0, count, CHUNK):
    size = min(CHUNK, count - start)
    images, labels = rng.integers(0, 256, size=(size, *SHAPE), dtype=np.uint8), rng.integers(0, 10, size)
    yield from zip(images, labels)


def prepare_tfds(data_dir: str, count: int) -> None:
  """Prepares `TFDS_NAME` (train: `count` random images; validation and test: EVAL_EXAMPLES) under
  `data_dir` with TFDS's own builder machinery, as TFRecord shards (TFDS's default format), SHARDS per
  split. Images are stored as raw bytes (a `Tensor` feature), so preparing 1M takes minutes, not the
  hour PNG encoding would."""
  import tensorflow_datasets as tfds  # optional dependency: only this format needs it
  tfds.disable_progress_bar()
  sizes = {"train": count, "validation": EVAL_EXAMPLES, "test": EVAL_EXAMPLES}

  with tfds.core.registered.skip_registration():  # read back by name from the prepared files

    class OccamScaleImages(tfds.core.GeneratorBasedBuilder):
      # TFDS looks for a checksums file beside a builder's code when the builder's module is in a
      # package, through `importlib_resources` (not installed); this builder downloads nothing.
      __module__ = TFDS_NAME
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(num_classes=10)}))

      def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {name: self._generate_examples(size, seed) for seed, (name, size) in enumerate(sizes.items())}

      def _generate_examples(self, size, seed):
        for index, (image, label) in enumerate(random_images(size, seed)):
          yield index, {"image": image, "label": int(label)}

  OccamScaleImages(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=SHARDS))


def write_dataset(directory: str, count: int, file_format: str) -> tuple[list[str], Callable]:
  """Writes train (count) / validation / test (EVAL_EXAMPLES each) splits.

  Returns the gin bindings that read them and a function that opens the training split here.
  """
  if file_format == "tfds":
    prepare_tfds(directory, count)
    return (["Trainer.data = @tfds", f"tfds.name = '{TFDS_NAME}'", f"tfds.data_dir = '{directory}'"],
            lambda: data.tfds(name=TFDS_NAME, data_dir=directory).train)
  splits = {name: write_npy(directory, name, size, seed)
            for seed, (name, size) in enumerate((("train", count), ("validation", EVAL_EXAMPLES),
                                                 ("test", EVAL_EXAMPLES)))}
  if file_format == "npy":
    train = splits["train"]
    return (["Trainer.data = @npy", "npy.num_classes = 10",
             *(f"npy.{name} = {list(paths)!r}" for name, paths in splits.items())],
            lambda: data.npy(train=train, validation=train, test=train, num_classes=10).train)
  bindings = ["Trainer.data = @tfrecord", "tfrecord.num_classes = 10", f"tfrecord.feature_shape = {SHAPE}"]
  for name, (features_path, labels_path) in splits.items():
    arrays = ArrayData(np.load(features_path, mmap_mode="r"), np.load(labels_path))
    prefix = os.path.join(directory, name)
    data.write_tfrecord(prefix, arrays, num_shards=SHARDS if name == "train" else 1)
    os.remove(features_path)
    pattern = f"{prefix}-*" if name == "train" else prefix
    bindings.append(f"tfrecord.{name}_files = '{pattern}'")
  train_files = os.path.join(directory, "train-*")
  return bindings, lambda: data.tfrecord(train_files=train_files, validation_files=train_files,
                                         test_files=train_files, feature_shape=SHAPE, num_classes=10).train


def run_bindings(data_bindings: list[str], steps: int, batch: int) -> list[str]:
  """The benchmark's run: the data, a ResNet-20-layout network, SGD, the CIFAR augmentation."""
  return data_bindings + [
      "Trainer.model = @ResNet", "ResNet.widths = (16, 32, 64)", "ResNet.blocks_per_stage = 3",
      "Trainer.optimizer = @SGD", "SGD.momentum = 0.9", "Trainer.learning_rate = 0.05",
      "Trainer.preprocessing = @ImagePreprocessing()",
      *(f"ImagePreprocessing.{key} = {value!r}" for key, value in AUGMENTATION.items()),
      f"Trainer.batch_size = {batch}", f"Trainer.eval_batch_size = {batch * 4}",
      f"Trainer.train_steps = {steps}",
      f"Trainer.steps_per_loop = {max(1, steps // 4)}", f"Trainer.eval_every = {steps}",
      f"Trainer.checkpoint_every = {steps}", "Monitor.sharpness_every = 0",
      "Monitor.train_eval_examples = 256"]


def main_command(model_dir: str, bindings: list[str]) -> list[str]:
  """`trainer.main` arguments for a run of `bindings` in `model_dir`."""
  base = os.path.join(REPO, "gin_configs", "base.gin")
  return ["trainer.main", f"--gin_file={base}", f"--model_dir={model_dir}",
          *(f"--gin_bindings={binding}" for binding in bindings)]


def train_child(model_dir: str, data_bindings: list[str], steps: int, batch: int) -> dict:
  """Trains in a child process; returns its peak RSS (MiB), time to the first loop's end, examples/s."""
  peak_file = os.path.join(os.path.dirname(model_dir), "peak_rss_kib")
  command = [sys.executable, "-m", "trainer.benchmarks.peak_rss", peak_file,
             *main_command(model_dir, run_bindings(data_bindings, steps, batch))]
  seen, _ = time_child(command, [r"train \| step:"])
  with open(peak_file) as file:
    peak_kib = int(file.read())
  rates = dict(events.read_scalars(os.path.join(model_dir, "train")).get("perf/examples_per_sec", []))
  return {"peak_rss_mib": peak_kib / 1024, "first_loop_s": float(seen[0, 0]),
          "examples_per_sec": float(np.median(list(rates.values()))) if rates else float("nan")}


def startup_phases(directory: str, data_bindings: list[str], batch: int) -> np.ndarray:
  """[phase, (wall, cpu)] seconds from process start to the end of each start-up phase (imports, build,
  first step: `startup.OCCAM_MARKERS`) of a fresh run with one step per loop."""
  bindings = run_bindings(data_bindings, steps=2, batch=batch) + ["Trainer.steps_per_loop = 1"]
  command = [sys.executable, "-m", *main_command(tempfile.mkdtemp(dir=directory), bindings)]
  return time_child(command, startup.OCCAM_MARKERS)[0]


def compare_startup(file_format: str, small: tuple[int, str, list[str]], large: tuple[int, str, list[str]],
                    batch: int, repeats: int) -> None:
  """Prints the start-up phases of `small` and `large` (N, directory, bindings), started in turn
  `repeats` times each, as medians, and the ratio large / small of each."""
  runs = {small[0]: [], large[0]: []}
  for _ in range(repeats):
    for size, directory, bindings in (small, large):
      runs[size].append(startup_phases(directory, bindings, batch))
  (small_size, small_runs), (large_size, large_runs) = runs.items()
  small_runs, large_runs = np.array(small_runs), np.array(large_runs)  # [repeats, phases, (wall, cpu)]
  print(f"{file_format} start-up, median of {repeats} alternating runs (phase: N={small_size} / "
        f"N={large_size} s, ratio; wall, then the child's cpu)")
  rows = [(phase, np.median(np.diff(small_runs, axis=1, prepend=0.0)[:, number], axis=0),
           np.median(np.diff(large_runs, axis=1, prepend=0.0)[:, number], axis=0))
          for number, phase in enumerate(startup.PHASES)]
  rows.append(("to first step", np.median(small_runs[:, -1], axis=0), np.median(large_runs[:, -1], axis=0)))
  for phase, small_phase, large_phase in rows:
    print(f"  {phase:<13}" + "".join(f"  {small_phase[i]:7.1f} / {large_phase[i]:7.1f} "
                                      f"({large_phase[i] / small_phase[i]:.2f}x)" for i in (0, 1)))
  first_step = rows[-1][2] / rows[-1][1]
  print(f"{file_format}: time to first step {large_size} / {small_size} = {first_step[0]:.2f}x wall, "
        f"{first_step[1]:.2f}x cpu", flush=True)


def pipeline_rate(split, batch: int, batches: int) -> float:
  """Examples/s of the training input pipeline alone, with the CIFAR augmentation."""
  stream = pipeline.train_dataset(split, global_batch_size=batch, seed=0, start_step=0,
                                  preprocessing=ImagePreprocessing(**AUGMENTATION))
  iterator = iter(stream)
  next(iterator)  # warm-up: tracing and the first fill
  started = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch / (time.perf_counter() - started)


def first_batch_seconds(split, batch: int, start_step: int) -> float:
  started = time.perf_counter()
  next(iter(pipeline.train_dataset(split, global_batch_size=batch, seed=0, start_step=start_step)))
  return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/benchmark_data.py`."""
  parser = argparse.ArgumentParser(prog="benchmark_data.py", description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="10000,100000,1000000")
  parser.add_argument("--formats", default=",".join(FORMATS))
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--quick", action="store_true", help="tiny sizes and steps: a smoke run")
  parser.add_argument("--startup_repeats", type=int, default=3,
                      help="start-ups of the smallest and the largest N per streamed format, alternating")
  parser.add_argument("--scratch", default=None, help="directory for the generated data (default: temp)")
  args = parser.parse_args(argv)
  sizes = [2000, 4000] if args.quick else [int(size) for size in args.sizes.split(",")]
  steps, batch = (4, 32) if args.quick else (args.steps, args.batch)
  formats = args.formats.split(",")
  print(f"CIFAR-shaped uint8 images {SHAPE}, ResNet-20 layout, batch {batch}, {steps} steps, "
        f"TF {tf.__version__}, {os.cpu_count()} CPUs")
  print(f"{'format':<9} {'N':>9} {'peak RSS MiB':>13} {'first loop s':>13} {'model ex/s':>11}")
  rows, written = {}, {}
  with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
    for file_format in formats:
      for size in sizes:
        directory = tempfile.mkdtemp(dir=scratch)
        bindings, open_train = write_dataset(directory, size, file_format)
        written[file_format, size] = (size, directory, bindings)
        row = train_child(os.path.join(directory, "run"), bindings, steps, batch)
        rows[file_format, size] = (row, open_train)
        print(f"{file_format:<9} {size:>9} {row['peak_rss_mib']:>13.0f} {row['first_loop_s']:>13.1f} "
              f"{row['examples_per_sec']:>11.0f}", flush=True)
      first, last = rows[file_format, sizes[0]][0], rows[file_format, sizes[-1]][0]
      print(f"{file_format}: peak RSS {sizes[-1]} / {sizes[0]} = "
            f"{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}x; "
            f"time to first loop {last['first_loop_s'] / first['first_loop_s']:.2f}x")
    for file_format in (name for name in formats if name in STREAMED):
      compare_startup(file_format, written[file_format, sizes[0]], written[file_format, sizes[-1]], batch,
                      repeats=1 if args.quick else args.startup_repeats)
    largest = sizes[-1]
    for file_format in formats:
      row, open_train = rows[file_format, largest]
      split = open_train()
      rate = pipeline_rate(split, batch, batches=8 if args.quick else 100)
      print(f"{file_format} N={largest}: input pipeline {rate:.0f} examples/s with augmentation vs the "
            f"model's {row['examples_per_sec']:.0f} in training: {rate / row['examples_per_sec']:.1f}x")
      if file_format in STREAMED:
        per_epoch = split.num_examples // batch
        deep = int(per_epoch * 0.95)
        print(f"{file_format} N={largest}: first batch at step 0 in "
              f"{first_batch_seconds(split, batch, 0):.2f} s; resumed at step {deep} (95% of an epoch) in "
              f"{first_batch_seconds(split, batch, deep):.2f} s")
  return 0
