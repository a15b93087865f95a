r"""The whole command line on ImageNet-shaped JPEGs: `python -m trainer.main` against the reference input.

    python scripts/benchmark_input.py --cli            # after the input pipelines, the whole CLI
    python scripts/benchmark_input.py --cli --quick    # a smoke run, numbers meaningless

On the JPEG shards of `trainer.benchmarks.input_throughput`, a child process trains a model too small
to matter (`PooledLinear`: global average pooling and one Dense layer, about 150,000 additions and
3,000 multiply-adds per 224x224 image against ResNet-50's 4.1 billion multiply-adds) through
`python -m trainer.main`, with the same random-resized crop to 224 and flip, batch `batch_size`, so
its speed is what the input path, the train loop and the framework around them deliver. The run has
two host loops before the timed ones (the first traces, and while it does the input pipeline fills
its buffers ahead: the second starts from the steady state), the timed loops, and a last loop, which
ends with the run's one evaluation and checkpoint (both due at the last step, before that loop's log
line). The rate is timed between the log lines that open and close the timed loops
(`children.time_child`: wall and the child's own CPU seconds), so it leaves out start-up, tracing
and that evaluation and checkpoint, which a real run pays once per `eval_every` steps, not per
step; what the last loop cost beyond a timed loop is printed apart, in CPU seconds.

The reference is the Model Garden-style `tf.data` pipeline alone (`input_throughput.reference_dataset`)
with the same resize, timed in this process between the children (`repeats` of each, interleaved,
medians): the ratio says what share of a bare input pipeline's rate the whole run keeps. Beside it,
the decomposition: the same reference pipeline feeding `PooledLinear`'s train step in a bare compiled
loop (`reference_training`), so that what the model's step costs (a pass over the float32 batch) and
what the framework adds are told apart. Run once with Occam's default antialiased resize and once
with plain bilinear (Model Garden's).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Sequence

import gin
import numpy as np
import tensorflow as tf

from trainer.benchmarks import input_throughput as inputs
from trainer.benchmarks.children import time_child
from trainer.benchmarks.timing import Variant, clock

STEPS_PER_LOOP = 5
UNTIMED_LOOPS = 2  # the first traces; the second starts from the steady state
LEARNING_RATE = 0.01


@gin.configurable
def PooledLinear(*, input_shape: Sequence[int], num_outputs: int) -> tf.keras.Model:  # noqa: N802  (a model)
  """Global average pooling and one Dense layer: a model whose step costs next to nothing."""
  images = tf.keras.Input(shape=tuple(input_shape))
  logits = tf.keras.layers.Dense(num_outputs)(tf.keras.layers.GlobalAveragePooling2D()(images))
  return tf.keras.Model(images, logits, name="pooled_linear")


def cli_bindings(files: Sequence[str], settings: inputs.Settings, loops: int, antialias: bool) -> list[str]:
  """The child's gin bindings: the shards streamed with the benchmark's crop; `UNTIMED_LOOPS` host
  loops, `loops` timed ones, and a last one that ends with the evaluation and checkpoint."""
  pattern = os.path.join(os.path.dirname(files[0]), "train-*")
  train_steps = STEPS_PER_LOOP * (UNTIMED_LOOPS + loops + 1)
  return [
      "Trainer.data = @tfrecord", f"tfrecord.train_files = '{pattern}'",
      f"tfrecord.validation_files = '{files[0]}'", f"tfrecord.test_files = '{files[0]}'",
      "tfrecord.feature_shape = (None, None, 3)", f"tfrecord.num_classes = {inputs.NUM_CLASSES}",
      f"tfrecord.shuffle_buffer = {settings.shuffle_buffer}",
      "Trainer.model = @PooledLinear", "Trainer.optimizer = @SGD", f"Trainer.learning_rate = {LEARNING_RATE}",
      "Trainer.preprocessing = @ImagePreprocessing()", f"ImagePreprocessing.image_size = {inputs.IMAGE_SIZE}",
      "ImagePreprocessing.train_crop = 'random_resized'", "ImagePreprocessing.flip = True",
      f"ImagePreprocessing.area_range = {inputs.AREA_RANGE}",
      f"ImagePreprocessing.aspect_ratio_range = {inputs.ASPECT_RATIO_RANGE}",
      "ImagePreprocessing.eval_crop = 'center'", f"ImagePreprocessing.antialias = {antialias}",
      f"Trainer.batch_size = {settings.batch_size}", f"Trainer.eval_batch_size = {settings.batch_size}",
      f"Trainer.steps_per_loop = {STEPS_PER_LOOP}", f"Trainer.train_steps = {train_steps}",
      f"Trainer.eval_every = {train_steps}", f"Trainer.checkpoint_every = {train_steps}",
      "Monitor.sharpness_every = 0", f"Monitor.train_eval_examples = {settings.batch_size}"]


def run_cli(files: Sequence[str], settings: inputs.Settings, loops: int, directory: str,
            antialias: bool) -> tuple[np.ndarray, float]:
  """([wall, CPU] seconds the child took for its `loops` timed host loops (`loops * STEPS_PER_LOOP`
  steps), CPU seconds its last loop took beyond one timed loop: the evaluation and checkpoint)."""
  config = os.path.join(directory, "cli.gin")
  with open(config, "w") as file:
    file.write(f"import {__name__}\n")  # registers PooledLinear in the child
  command = [sys.executable, "-m", "trainer.main", f"--gin_file={config}",
             f"--model_dir={os.path.join(directory, 'run')}",
             *(f"--gin_bindings={binding}" for binding in cli_bindings(files, settings, loops, antialias))]
  ends = (UNTIMED_LOOPS, UNTIMED_LOOPS + loops, UNTIMED_LOOPS + loops + 1)  # loops whose log lines are timed
  markers = [rf"train \| step: {STEPS_PER_LOOP * loop}/" for loop in ends]
  seen, _ = time_child(command, markers)
  timed = seen[1] - seen[0]
  last_loop_cpu = seen[2, 1] - seen[1, 1]
  return timed, float(last_loop_cpu - timed[1] / loops)


def reference_training(files: Sequence[str], settings: inputs.Settings, antialias: bool) -> Variant:
  """The reference pipeline feeding `PooledLinear`'s SGD step in a bare compiled loop of `STEPS_PER_LOOP`
  steps, as a measurement of about `settings.batches` steps: the input pipeline plus the model's step,
  without the framework."""
  model = PooledLinear(input_shape=(inputs.IMAGE_SIZE, inputs.IMAGE_SIZE, 3), num_outputs=inputs.NUM_CLASSES)
  optimizer = tf.keras.optimizers.SGD(LEARNING_RATE)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function
  def loop(iterator) -> tf.Tensor:
    loss = tf.constant(0.0)
    for _ in tf.range(STEPS_PER_LOOP):
      images, labels = next(iterator)
      with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(images, training=True))
      weights = model.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
    return loss

  calls = max(1, settings.batches // STEPS_PER_LOOP)

  def measure() -> np.ndarray:
    iterator = iter(inputs.reference_dataset(files, settings, antialias=antialias))
    loop(iterator).numpy()  # untimed, as the input variants' warm-up batches
    started = clock()
    for _ in range(calls):
      loop(iterator).numpy()
    return clock() - started

  return Variant("reference + train step", measure, calls * STEPS_PER_LOOP * settings.batch_size)


def measure(files: Sequence[str], settings: inputs.Settings, *, antialias: bool = True) -> list[str]:
  """The whole CLI's images/s per core and per CPU-second against the reference pipeline that resizes
  alike (`antialias`), and the decomposition, as lines. Each child times about `settings.batches`
  steps (whole host loops of `STEPS_PER_LOOP`); children and in-process measurements are interleaved,
  `settings.repeats` of each, medians."""
  loops = max(1, settings.batches // STEPS_PER_LOOP)
  reference = inputs.input_variant(
      "reference", lambda: inputs.reference_dataset(files, settings, antialias=antialias), settings)
  trained = reference_training(files, settings, antialias)
  last_loop_cpu: list[float] = []

  def run_child() -> np.ndarray:
    with tempfile.TemporaryDirectory() as directory:
      timed, extra = run_cli(files, settings, loops, directory, antialias)
    last_loop_cpu.append(extra)
    return timed

  cli = Variant("whole CLI", run_child, loops * STEPS_PER_LOOP * settings.batch_size)
  # As `time_interleaved`, but a child starts afresh every time: it needs no warm-up run of its own.
  for variant in (reference, trained):
    variant.measure()
  for _ in range(settings.repeats):
    for variant in (reference, trained, cli):
      variant.seconds.append(variant.measure())
  cli_wall, cli_cpu = cli.rate
  reference_wall, reference_cpu = reference.rate
  input_ms, step_ms, cli_ms = (1000 / rate for rate in (reference_cpu, trained.rate[1], cli_cpu))
  cores = inputs.cores()
  resize = "antialiased" if antialias else "plain bilinear"
  return [f"whole CLI (python -m trainer.main, PooledLinear, {resize}, {loops * STEPS_PER_LOOP} steps "
          "timed): "
          f"{cli_wall / cores:.1f} images/s/core (wall; {cli_wall:.1f} images/s), "
          f"{cli_cpu:.1f} images per CPU-second",
          f"  reference input pipeline alone ({resize}): {reference_wall / cores:.1f} images/s/core, "
          f"{reference_cpu:.1f} images per CPU-second",
          f"whole CLI / reference: {cli_wall / reference_wall:.2f}x wall, {cli_cpu / reference_cpu:.2f}x CPU",
          f"  decomposition, ms of CPU per image: reference input {input_ms:.3f}; + PooledLinear's train "
          f"step in a bare compiled loop {step_ms - input_ms:+.3f}; "
          f"+ the rest of the CLI (its own input pipeline, the framework) {cli_ms - step_ms:+.3f}",
          f"  the last loop's evaluation and checkpoint (not in the rate): {np.median(last_loop_cpu):.2f} "
          "CPU-seconds beyond a training loop, once per eval_every steps"]
