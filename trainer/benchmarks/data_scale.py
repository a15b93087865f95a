r"""Occam's data-at-scale benchmark: memory and start-up flat in the dataset size, input vs model speed.

    python scripts/benchmark_data.py                       # 10k, 100k and 1M CIFAR-shaped images
    python scripts/benchmark_data.py --sizes=10000,100000 --steps=20
    python scripts/benchmark_data.py --quick               # smoke run: tiny sizes, numbers meaningless

For each size N and each way of reading (`npy`: memory-mapped uint8 arrays, read by index; `tfrecord`:
16 raw-uint8 TFRecord shards, streamed), it writes N random 32x32x3 uint8 images with labels to a
scratch directory, then trains a CIFAR ResNet (3 stages of 3 residual blocks, 16/32/64 channels:
ResNet-20's layout) for `--steps` steps through the real command line (`python -m trainer.main`) with
the CIFAR augmentation (pad-4 crop, flip, normalization), in a child process whose peak resident
memory (VmHWM, read by the child as it exits: `trainer.benchmarks.peak_rss`) and time to the end of
the first training loop are recorded. The ratios between sizes are what to read: memory and time to
first step should not grow with N.

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
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from trainer import data
from trainer.benchmarks.children import REPO, time_child
from trainer.data import ArrayData, ImagePreprocessing, pipeline
from trainer.metrics import events

SHAPE = (32, 32, 3)
EVAL_EXAMPLES = 1000
SHARDS = 16
CHUNK = 50_000  # images generated at a time while writing
AUGMENTATION = dict(train_crop="pad_and_crop", padding=4, flip=True, mean=(0.49, 0.48, 0.45),
                    std=(0.25, 0.24, 0.26))
FORMATS = ("npy", "tfrecord")


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


def write_dataset(directory: str, count: int, file_format: str) -> tuple[list[str], Callable]:
  """Writes train (count) / validation / test (EVAL_EXAMPLES each) splits.

  Returns the gin bindings that read them and a function that opens the training split here.
  """
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


def train_child(model_dir: str, data_bindings: list[str], steps: int, batch: int) -> dict:
  """Trains in a child process; returns its peak RSS (MiB), time to the first loop's end, examples/s."""
  bindings = data_bindings + [
      "Trainer.model = @ResNet", "ResNet.widths = (16, 32, 64)", "ResNet.blocks_per_stage = 3",
      "Trainer.optimizer = @SGD", "SGD.momentum = 0.9", "Trainer.learning_rate = 0.05",
      "Trainer.preprocessing = @ImagePreprocessing()",
      *(f"ImagePreprocessing.{key} = {value!r}" for key, value in AUGMENTATION.items()),
      f"Trainer.batch_size = {batch}", f"Trainer.eval_batch_size = {batch * 4}",
      f"Trainer.train_steps = {steps}",
      f"Trainer.steps_per_loop = {max(1, steps // 4)}", f"Trainer.eval_every = {steps}",
      f"Trainer.checkpoint_every = {steps}", "Monitor.sharpness_every = 0",
      "Monitor.train_eval_examples = 256"]
  base = os.path.join(REPO, "gin_configs", "base.gin")
  peak_file = os.path.join(os.path.dirname(model_dir), "peak_rss_kib")
  command = [sys.executable, "-m", "trainer.benchmarks.peak_rss", peak_file, "trainer.main",
             f"--gin_file={base}", f"--model_dir={model_dir}", *(f"--gin_bindings={b}" for b in bindings)]
  seen, _ = time_child(command, [r"train \| step:"])
  with open(peak_file) as file:
    peak_kib = int(file.read())
  rates = dict(events.read_scalars(os.path.join(model_dir, "train")).get("perf/examples_per_sec", []))
  return {"peak_rss_mib": peak_kib / 1024, "first_loop_s": float(seen[0, 0]),
          "examples_per_sec": float(np.median(list(rates.values()))) if rates else float("nan")}


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
  parser.add_argument("--scratch", default=None, help="directory for the generated data (default: temp)")
  args = parser.parse_args(argv)
  sizes = [2000, 4000] if args.quick else [int(size) for size in args.sizes.split(",")]
  steps, batch = (4, 32) if args.quick else (args.steps, args.batch)
  formats = args.formats.split(",")
  print(f"CIFAR-shaped uint8 images {SHAPE}, ResNet-20 layout, batch {batch}, {steps} steps, "
        f"TF {tf.__version__}, {os.cpu_count()} CPUs")
  print(f"{'format':<9} {'N':>9} {'peak RSS MiB':>13} {'first loop s':>13} {'model ex/s':>11}")
  rows = {}
  with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
    for file_format in formats:
      for size in sizes:
        directory = tempfile.mkdtemp(dir=scratch)
        bindings, open_train = write_dataset(directory, size, file_format)
        row = train_child(os.path.join(directory, "run"), bindings, steps, batch)
        rows[file_format, size] = (row, open_train)
        print(f"{file_format:<9} {size:>9} {row['peak_rss_mib']:>13.0f} {row['first_loop_s']:>13.1f} "
              f"{row['examples_per_sec']:>11.0f}", flush=True)
      first, last = rows[file_format, sizes[0]][0], rows[file_format, sizes[-1]][0]
      print(f"{file_format}: peak RSS {sizes[-1]} / {sizes[0]} = "
            f"{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}x; "
            f"time to first loop {last['first_loop_s'] / first['first_loop_s']:.2f}x")
    largest = sizes[-1]
    for file_format in formats:
      row, open_train = rows[file_format, largest]
      split = open_train()
      rate = pipeline_rate(split, batch, batches=8 if args.quick else 100)
      print(f"{file_format} N={largest}: input pipeline {rate:.0f} examples/s with augmentation vs the "
            f"model's {row['examples_per_sec']:.0f} in training: {rate / row['examples_per_sec']:.1f}x")
      if file_format == "tfrecord":
        per_epoch = split.num_examples // batch
        deep = int(per_epoch * 0.95)
        print(f"tfrecord N={largest}: first batch at step 0 in {first_batch_seconds(split, batch, 0):.2f} "
              f"s; resumed at step {deep} (95% of an epoch) in "
              f"{first_batch_seconds(split, batch, deep):.2f} s")
  return 0
