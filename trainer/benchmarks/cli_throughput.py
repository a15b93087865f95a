r"""The whole command line on ImageNet-shaped JPEGs: `python -m trainer.main` against the reference input.

    python scripts/benchmark_input.py --cli            # after the input pipelines, the whole CLI
    python scripts/benchmark_input.py --cli --quick    # a smoke run, numbers meaningless

On the JPEG shards of `trainer.benchmarks.input_throughput`, a child process trains a model too small
to matter (`PooledLinear`: global average pooling and one Dense layer, about 150,000 additions and
3,000 multiply-adds per 224x224 image against ResNet-50's 4.1 billion multiply-adds) through
`python -m trainer.main`, with the same random-resized crop to 224 and flip, batch `batch_size`, so
its speed is what the input path, the train loop and the framework around them deliver. It is timed
from the log line of its first training loop to that of its last (`children.time_child`: wall and
the child's own CPU seconds), which leaves out start-up, tracing and the final evaluation and
checkpoint. The reference is the Model Garden-style `tf.data` pipeline
alone (`input_throughput.reference_dataset`) with the same resize, timed in this process: the ratio
says what share of a bare input pipeline's rate the whole run keeps. Run once with Occam's default
antialiased resize and once with plain bilinear (Model Garden's).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Sequence

import gin
import tensorflow as tf

from trainer.benchmarks import input_throughput as inputs
from trainer.benchmarks.children import time_child
from trainer.benchmarks.timing import time_interleaved

STEPS_PER_LOOP = 5


@gin.configurable
def PooledLinear(*, input_shape: Sequence[int], num_outputs: int) -> tf.keras.Model:  # noqa: N802  (a model)
  """Global average pooling and one Dense layer: a model whose step costs next to nothing."""
  images = tf.keras.Input(shape=tuple(input_shape))
  logits = tf.keras.layers.Dense(num_outputs)(tf.keras.layers.GlobalAveragePooling2D()(images))
  return tf.keras.Model(images, logits, name="pooled_linear")


def cli_bindings(files: Sequence[str], settings: inputs.Settings, loops: int, antialias: bool) -> list[str]:
  """The child's gin bindings: the shards streamed with the benchmark's crop, `loops` + 1 host loops."""
  pattern = os.path.join(os.path.dirname(files[0]), "train-*")
  return [
      "Trainer.data = @tfrecord", f"tfrecord.train_files = '{pattern}'",
      f"tfrecord.validation_files = '{files[0]}'", f"tfrecord.test_files = '{files[0]}'",
      "tfrecord.feature_shape = (None, None, 3)", f"tfrecord.num_classes = {inputs.NUM_CLASSES}",
      f"tfrecord.shuffle_buffer = {settings.shuffle_buffer}",
      "Trainer.model = @PooledLinear", "Trainer.optimizer = @SGD", "Trainer.learning_rate = 0.01",
      "Trainer.preprocessing = @ImagePreprocessing()", f"ImagePreprocessing.image_size = {inputs.IMAGE_SIZE}",
      "ImagePreprocessing.train_crop = 'random_resized'", "ImagePreprocessing.flip = True",
      f"ImagePreprocessing.area_range = {inputs.AREA_RANGE}",
      f"ImagePreprocessing.aspect_ratio_range = {inputs.ASPECT_RATIO_RANGE}",
      "ImagePreprocessing.eval_crop = 'center'", f"ImagePreprocessing.antialias = {antialias}",
      f"Trainer.batch_size = {settings.batch_size}", f"Trainer.eval_batch_size = {settings.batch_size}",
      f"Trainer.steps_per_loop = {STEPS_PER_LOOP}", f"Trainer.train_steps = {STEPS_PER_LOOP * (loops + 1)}",
      f"Trainer.eval_every = {STEPS_PER_LOOP * (loops + 1)}",
      f"Trainer.checkpoint_every = {STEPS_PER_LOOP * (loops + 1)}",
      "Monitor.sharpness_every = 0", f"Monitor.train_eval_examples = {settings.batch_size}"]


def run_cli(files: Sequence[str], settings: inputs.Settings, loops: int, directory: str,
            antialias: bool) -> tuple[float, float]:
  """(wall, CPU) seconds the child took for its last `loops` host loops (`loops * STEPS_PER_LOOP` steps)."""
  config = os.path.join(directory, "cli.gin")
  with open(config, "w") as file:
    file.write(f"import {__name__}\n")  # registers PooledLinear in the child
  last = STEPS_PER_LOOP * (loops + 1)
  command = [sys.executable, "-m", "trainer.main", f"--gin_file={config}",
             f"--model_dir={os.path.join(directory, 'run')}",
             *(f"--gin_bindings={binding}" for binding in cli_bindings(files, settings, loops, antialias))]
  seen, _ = time_child(command, [rf"train \| step: {STEPS_PER_LOOP}/", rf"train \| step: {last}/"])
  wall, cpu = seen[1] - seen[0]
  return float(wall), float(cpu)


def measure(files: Sequence[str], settings: inputs.Settings, *, antialias: bool = True) -> list[str]:
  """The whole CLI's images/s per core and per CPU-second against the reference pipeline that resizes
  alike (`antialias`), as lines; the child times about `settings.batches` steps (whole host loops of
  `STEPS_PER_LOOP`)."""
  loops = max(1, settings.batches // STEPS_PER_LOOP)
  reference = inputs.input_variant(
      "reference", lambda: inputs.reference_dataset(files, settings, antialias=antialias), settings)
  time_interleaved([reference], settings.repeats)
  with tempfile.TemporaryDirectory() as directory:
    wall, cpu = run_cli(files, settings, loops, directory, antialias)
  images = loops * STEPS_PER_LOOP * settings.batch_size
  cli_wall, cli_cpu = images / wall, images / cpu
  reference_wall, reference_cpu = reference.rate
  cores = inputs.cores()
  resize = "antialiased" if antialias else "plain bilinear"
  return [f"whole CLI (python -m trainer.main, PooledLinear, {resize}, {loops * STEPS_PER_LOOP} steps "
          "timed): "
          f"{cli_wall / cores:.1f} images/s/core (wall; {cli_wall:.1f} images/s), "
          f"{cli_cpu:.1f} images per CPU-second",
          f"  reference input pipeline alone ({resize}): {reference_wall / cores:.1f} images/s/core, "
          f"{reference_cpu:.1f} images per CPU-second",
          f"whole CLI / reference: {cli_wall / reference_wall:.2f}x wall, {cli_cpu / reference_cpu:.2f}x CPU"]
