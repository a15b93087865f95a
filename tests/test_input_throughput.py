"""The input-throughput benchmark (`trainer.benchmarks.input_throughput`): its files, pipelines and output.

Timings are never asserted (a shared machine); what is checked is what the benchmark controls: the
JPEG shards it writes (read back with TensorFlow's own reader), that Occam's pipeline and the reference
both deliver batches of 224x224x3 images in [0, 1] from them, that a run prints every variant and the
ratios as finite positive numbers, that the whole CLI's timed loops end before its evaluation and
checkpoint, and that a bad setting exits with status 2 before writing anything.
"""

from __future__ import annotations

import math
import re
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from trainer.benchmarks import cli_throughput
from trainer.benchmarks import input_throughput as bench

TINY = bench.Settings(images=6, shards=2, batch_size=2, batches=1, warmup_batches=0, repeats=1,
                      shuffle_buffer=4)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
  return bench.write_jpeg_shards(str(tmp_path_factory.mktemp("jpegs")), TINY)


def test_shards_hold_imagenet_sized_jpegs_one_size_per_shard(shards):
  assert len(shards) == TINY.shards
  spec = {bench.FEATURE_KEY: tf.io.FixedLenFeature([], tf.string),
          bench.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
  total = 0
  for path in shards:
    shapes = set()
    for record in tf.data.TFRecordDataset(path):
      example = tf.io.parse_single_example(record, spec)
      encoded = example[bench.FEATURE_KEY].numpy()
      assert encoded[:2] == b"\xff\xd8"  # a JPEG's start-of-image marker
      image = tf.io.decode_jpeg(encoded)
      shapes.add(tuple(image.shape))
      assert 0 <= int(example[bench.LABEL_KEY]) < bench.NUM_CLASSES
      total += 1
    [(height, width, channels)] = shapes
    assert bench.SIDES[0] <= min(height, width) and max(height, width) <= bench.SIDES[1] and channels == 3
  assert total == TINY.images


@pytest.mark.parametrize("make", [bench.occam_dataset, bench.reference_dataset], ids=["occam", "reference"])
def test_both_pipelines_deliver_cropped_flipped_batches_in_unit_range(shards, make):
  images, labels = next(iter(make(shards, TINY)))
  assert images.shape == (TINY.batch_size, bench.IMAGE_SIZE, bench.IMAGE_SIZE, 3)
  assert images.dtype == tf.float32 and labels.dtype == tf.int32
  # Bilinear resizing of uint8 pixels stays within [0, 255] (antialiasing may overshoot by a little).
  assert float(tf.reduce_min(images)) >= -0.05 and float(tf.reduce_max(images)) <= 1.05
  assert np.all((labels.numpy() >= 0) & (labels.numpy() < bench.NUM_CLASSES))


@pytest.mark.slow
def test_a_run_prints_each_variant_and_finite_positive_ratios(capsys):
  argv = [f"--{name}={value}" for name, value in vars(TINY).items()]
  assert bench.main(argv) == 0
  output = capsys.readouterr().out
  for label in ("occam", "occam, plain bilinear", "reference", "reference, antialiased"):
    line = re.search(rf"^  {re.escape(label)}: ([\d.]+) images/s/core .* ([\d.]+) images per CPU-second$",
                     output, flags=re.M)
    assert line, output
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in line.groups())
  ratios = re.findall(r"^(occam(?:, plain bilinear)?) / (reference(?:, antialiased)?): ([\d.]+)x wall, "
                      r"([\d.]+)x CPU$", output, flags=re.M)
  assert [(numerator, denominator) for numerator, denominator, *_ in ratios] == list(bench.COMPARED)
  assert all(math.isfinite(float(v)) and float(v) > 0 for _, _, *values in ratios for v in values)


def test_more_shards_than_images_exits_with_status_2_naming_both(capsys, tmp_path, monkeypatch):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the benchmark would write its shards
  with pytest.raises(SystemExit) as exit_info:
    bench.main(["--images=4", "--shards=5"])
  assert exit_info.value.code == 2
  assert "--shards=5 exceeds --images=4" in capsys.readouterr().err
  assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_whole_cli_measurement_trains_the_pooled_linear_model_and_prints_its_ratio(shards):
  """`python -m trainer.main` trains `PooledLinear` on the shards in a child; the lines carry finite
  positive rates and ratios (never asserted against a target: a shared machine)."""
  lines = cli_throughput.measure(shards, TINY)
  output = "\n".join(lines)
  rates = re.search(r"^whole CLI .*: ([\d.]+) images/s/core .* ([\d.]+) images per CPU-second$", output,
                    flags=re.M)
  ratios = re.search(r"^whole CLI / reference: ([\d.]+)x wall, ([\d.]+)x CPU$", output, flags=re.M)
  assert rates and ratios, output
  assert all(math.isfinite(float(v)) and float(v) > 0 for v in rates.groups() + ratios.groups())
  parts = re.search(r"^  decomposition, ms of CPU per image: reference input ([\d.]+); .* loop ([-+][\d.]+); "
                    r".* ([-+][\d.]+)$", output, flags=re.M)
  last_loop = re.search(r"^  the last loop's evaluation and checkpoint .*: ([-\d.]+) CPU-seconds", output,
                        flags=re.M)
  assert parts and last_loop, output
  assert all(math.isfinite(float(v)) for v in parts.groups() + last_loop.groups())


def test_the_timed_loops_end_before_the_evaluation_and_checkpoint(shards):
  """The run's one evaluation and checkpoint come at its last step, in the loop after the timed ones
  (its log line follows them): the rate counts training loops only."""
  loops = 3
  bindings = dict(binding.split(" = ", 1)
                  for binding in cli_throughput.cli_bindings(shards, TINY, loops, antialias=True))
  last_timed_step = cli_throughput.STEPS_PER_LOOP * (cli_throughput.UNTIMED_LOOPS + loops)
  assert int(bindings["Trainer.steps_per_loop"]) == cli_throughput.STEPS_PER_LOOP
  for name in ("Trainer.train_steps", "Trainer.eval_every", "Trainer.checkpoint_every"):
    assert int(bindings[name]) == last_timed_step + cli_throughput.STEPS_PER_LOOP, name


def test_pooled_linear_is_global_average_pooling_then_dense():
  model = cli_throughput.PooledLinear(input_shape=(5, 6, 3), num_outputs=4)
  images = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
  kernel, bias = (weight.numpy() for weight in model.layers[-1].weights)
  np.testing.assert_allclose(model(images).numpy(), images.mean(axis=(1, 2)) @ kernel + bias, rtol=1e-5,
                             atol=1e-6)
