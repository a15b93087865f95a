r"""Per-host input throughput on ImageNet-shaped JPEGs: Occam's input pipeline against a reference.

    python scripts/benchmark_input.py              # 1,024 JPEGs, batch 128, 3 repeats of 10 batches
    python scripts/benchmark_input.py --quick      # a smoke run: few images and batches, numbers meaningless
    python scripts/benchmark_input.py --cli        # then the whole CLI (`trainer.benchmarks.cli_throughput`)

The benchmark writes random JPEG images of 300-500 px per side (smooth random fields, so files and
decoding cost are of ImageNet's order rather than incompressible noise) with the package's own writer
(`trainer.data.write_tfrecord(image_format='jpeg')`, one image size per shard) into a temporary
directory, then reads the same files four ways, each producing float32 batches of 224x224x3 images in
[0, 1] after a random-resized crop (area 8%-100%, aspect 3/4-4/3) and a random left-right flip:

- occam: `trainer.data.tfrecord(feature_shape=(None, None, 3))` streamed by
  `trainer.data.pipeline.train_dataset` with `ImagePreprocessing(image_size=224,
  train_crop='random_resized', flip=True)`: what a training run reads.
- reference: a tf.data pipeline written the way TF Model Garden's classification input is: shuffled
  files, parallel non-deterministic interleave, a shuffle buffer of serialized records, one parallel
  map that parses, samples the crop window from the JPEG header (`tf.image.extract_jpeg_shape`) and
  decodes only that window (`tf.image.decode_and_crop_jpeg`), resizes bilinearly and flips, AUTOTUNE
  everywhere, then batch and prefetch.
- reference, antialiased: the same with Occam's default resize (`antialias=True`), which separates the
  cost of that choice from the cost of the pipeline's structure.
- occam, plain bilinear: Occam with `ImagePreprocessing.antialias=False`, the reference's resize.

Each measurement builds a fresh iterator, pulls `--warmup_batches` untimed (autotuning, buffers),
times `--batches` batches, and drops the iterator, so no pipeline works in the background while
another is timed; the four are timed interleaved, `--repeats` times after one warm-up round, and
each figure is the median (`timing`). Printed: images/s per core (wall-clock images/s divided by the
cores this process may use) and images per CPU-second of this process (all threads: nearly immune to
other load), for each, and the ratios Occam / reference, like for like
(`COMPARED`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from typing import Sequence

import numpy as np
import tensorflow as tf

from trainer import data
from trainer.benchmarks.timing import Variant, clock, ratio, time_interleaved
from trainer.data import ArrayData, ImagePreprocessing, pipeline

IMAGE_SIZE = 224
SIDES = (300, 500)  # the stored images' height and width are drawn uniformly from this range
NUM_CLASSES = 1000
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
FEATURE_KEY, LABEL_KEY = "features", "label"  # what `write_tfrecord` writes and `tfrecord` reads


@dataclasses.dataclass(frozen=True)
class Settings:
  """What is written and how much is timed."""

  images: int = 1024
  shards: int = 16
  batch_size: int = 128
  batches: int = 10
  warmup_batches: int = 3
  repeats: int = 3
  shuffle_buffer: int = 1024


QUICK = Settings(images=128, shards=4, batch_size=32, batches=2, warmup_batches=1, repeats=1,
                 shuffle_buffer=128)


def smooth_images(count: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """`count` uint8 RGB images: random 8x8 colour fields resized up, plus mild pixel noise.

  Photographs are mostly smooth, and JPEG's size and decoding time grow with detail: pure noise would
  make files several times larger than ImageNet's (about 110 KB on average) and decoding slower.
  """
  coarse = rng.uniform(0, 255, size=(count, 8, 8, 3)).astype(np.float32)
  fields = tf.image.resize(coarse, [height, width], method="bicubic").numpy()
  noisy = fields + rng.normal(0, 8, size=fields.shape)
  return np.clip(noisy, 0, 255).astype(np.uint8)


def write_jpeg_shards(directory: str, settings: Settings, seed: int = 0) -> list[str]:
  """`settings.images` JPEGs in `settings.shards` TFRecord files, one random image size per shard."""
  rng = np.random.default_rng(seed)
  paths = []
  for shard in range(settings.shards):
    count = len(range(shard, settings.images, settings.shards))
    height, width = (int(side) for side in rng.integers(SIDES[0], SIDES[1] + 1, size=2))
    arrays = ArrayData(smooth_images(count, height, width, rng),
                       rng.integers(0, NUM_CLASSES, size=count).astype(np.int32))
    path = os.path.join(directory, f"train-{shard:05d}-of-{settings.shards:05d}")
    paths += data.write_tfrecord(path, arrays, feature_key=FEATURE_KEY, label_key=LABEL_KEY,
                                 image_format="jpeg")
  return paths


def occam_dataset(files: Sequence[str], settings: Settings, *, antialias: bool = True) -> tf.data.Dataset:
  """Occam's training input pipeline over `files`, as a run with these bindings reads them."""
  split = data.tfrecord(train_files=list(files), validation_files=files[0], test_files=files[0],
                        feature_shape=(None, None, 3), num_classes=NUM_CLASSES,
                        shuffle_buffer=settings.shuffle_buffer).train
  preprocessing = ImagePreprocessing(image_size=IMAGE_SIZE, train_crop="random_resized", flip=True,
                                     area_range=AREA_RANGE, aspect_ratio_range=ASPECT_RATIO_RANGE,
                                     antialias=antialias)
  return pipeline.train_dataset(split, global_batch_size=settings.batch_size, seed=0, start_step=0,
                                preprocessing=preprocessing)


def _decode_crop_flip(serialized: tf.Tensor, antialias: bool) -> tuple[tf.Tensor, tf.Tensor]:
  """One record: a random window decoded straight from the JPEG, resized to 224, maybe flipped."""
  parsed = tf.io.parse_single_example(serialized, {FEATURE_KEY: tf.io.FixedLenFeature([], tf.string),
                                                   LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)})
  encoded = parsed[FEATURE_KEY]
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      tf.image.extract_jpeg_shape(encoded), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      min_object_covered=0.0, aspect_ratio_range=ASPECT_RATIO_RANGE, area_range=AREA_RANGE,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
  image = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear", antialias=antialias)
  image = tf.image.random_flip_left_right(image) / 255.0
  return image, tf.cast(parsed[LABEL_KEY], tf.int32)


def reference_dataset(files: Sequence[str], settings: Settings, *,
                      antialias: bool = False) -> tf.data.Dataset:
  """The reference: TF Model Garden's way of reading an image classification training split."""
  records = (tf.data.Dataset.from_tensor_slices(list(files))
             .shuffle(len(files), seed=0)
             .repeat()
             .interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
             .shuffle(settings.shuffle_buffer, seed=0))
  return (records.map(lambda record: _decode_crop_flip(record, antialias),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
          .batch(settings.batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


def input_variant(label: str, make_dataset, settings: Settings) -> Variant:
  """A measurement: a fresh iterator, `warmup_batches` untimed, `batches` timed, then dropped."""
  def measure() -> np.ndarray:
    iterator = iter(make_dataset())
    for _ in range(settings.warmup_batches):
      next(iterator)
    started = clock()
    for _ in range(settings.batches):
      images, _ = next(iterator)
    seconds = clock() - started
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
      raise ValueError(f"{label}: batches of shape {images.shape}, expected (*, 224, 224, 3)")
    return seconds

  return Variant(label, measure, settings.batches * settings.batch_size)


# The ratios printed, (numerator, denominator): each Occam variant against the reference that resizes alike.
COMPARED = (("occam", "reference, antialiased"), ("occam, plain bilinear", "reference"),
            ("occam", "reference"))


def measure(files: Sequence[str], settings: Settings) -> list[Variant]:
  """Occam (antialiased resize, its default, and plain bilinear), the reference and the antialiased
  reference, timed side by side on the same files."""
  variants = [input_variant("occam", lambda: occam_dataset(files, settings), settings),
              input_variant("occam, plain bilinear", lambda: occam_dataset(files, settings, antialias=False),
                            settings),
              input_variant("reference", lambda: reference_dataset(files, settings), settings),
              input_variant("reference, antialiased",
                            lambda: reference_dataset(files, settings, antialias=True), settings)]
  time_interleaved(variants, settings.repeats)
  return variants


def cores() -> int:
  """The cores this process may run on (its CPU affinity where the OS reports it)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def report(variants: Sequence[Variant], settings: Settings, image_bytes: float) -> list[str]:
  """The printed lines: the setting, each variant's images/s per core and per CPU-second, the ratios."""
  by_label = {variant.label: variant for variant in variants}
  lines = [f"input throughput: {settings.images} random JPEGs of {SIDES[0]}-{SIDES[1]} px "
           f"({image_bytes / 1024:.0f} KiB on average) in {settings.shards} TFRecord shards; random-resized "
           f"crop to {IMAGE_SIZE} + flip, batch {settings.batch_size}; median of {settings.repeats} "
           f"interleaved repeats of {settings.batches} batches; {cores()} cores; TensorFlow {tf.__version__}"]
  for variant in variants:
    wall, cpu = variant.rate
    lines.append(f"  {variant.label}: {wall / cores():.1f} images/s/core (wall; {wall:.1f} images/s), "
                 f"{cpu:.1f} images per CPU-second")
  for numerator, denominator in COMPARED:
    wall, cpu = ratio(by_label[numerator], by_label[denominator])
    lines.append(f"{numerator} / {denominator}: {wall:.2f}x wall, {cpu:.2f}x CPU")
  return lines


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/benchmark_input.py`."""
  defaults = Settings()
  parser = argparse.ArgumentParser(prog="benchmark_input.py", description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="few images and batches: a smoke run")
  parser.add_argument("--cli", action="store_true",
                      help="then time the whole CLI (python -m trainer.main) against the reference")
  for field in dataclasses.fields(Settings):
    parser.add_argument(f"--{field.name}", type=int, help=f"default {getattr(defaults, field.name)}")
  args = parser.parse_args(argv)
  fields = [field.name for field in dataclasses.fields(Settings)]
  given = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
  settings = dataclasses.replace(QUICK if args.quick else defaults, **given)
  problems = [f"--{name}={getattr(settings, name)} must be >= {int(name != 'warmup_batches')}"
              for name in fields if getattr(settings, name) < int(name != "warmup_batches")]
  if settings.shards > settings.images:
    problems.append(f"--shards={settings.shards} exceeds --images={settings.images}")
  if problems:
    parser.error("; ".join(problems))
  with tempfile.TemporaryDirectory() as directory:
    files = write_jpeg_shards(directory, settings)
    image_bytes = sum(os.path.getsize(path) for path in files) / settings.images
    variants = measure(files, settings)
    print("\n".join(report(variants, settings, image_bytes)), flush=True)
    if args.cli:
      from trainer.benchmarks import cli_throughput  # imports this module: imported here, when asked for
      for antialias in (True, False):
        print("\n".join(cli_throughput.measure(files, settings, antialias=antialias)), flush=True)
  return 0
