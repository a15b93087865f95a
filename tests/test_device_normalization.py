"""Images cross to the device as uint8 and are normalized there (`ImagePreprocessing.normalize_on_device`).

What crosses is checked against what the host computed before (the default path), and the device's
`(x / 255 - mean) / std` against the host's for every pixel value: equal in eager execution (as
tf.data computes it), within 1e-6 where a compiled graph rewrites the arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import pipeline
from trainer.data.arrays import ArrayData
from trainer.data.preprocessing import ImagePreprocessing

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
RNG = np.random.default_rng(0)
IMAGES = ArrayData(features=RNG.integers(0, 256, size=(24, 8, 8, 3), dtype=np.uint8),
                   labels=RNG.integers(0, 10, size=24).astype(np.int32))


def preprocessing(on_device: bool, **crop) -> ImagePreprocessing:
  return ImagePreprocessing(mean=MEAN, std=STD, normalize_on_device=on_device, **crop)


def first_train_batch(prep: ImagePreprocessing) -> np.ndarray:
  features, _ = next(iter(pipeline.train_dataset(IMAGES, global_batch_size=8, seed=3, start_step=0,
                                                 preprocessing=prep)))
  return features.numpy()


@pytest.mark.parametrize("crop", [{}, {"train_crop": "pad_and_crop", "flip": True}])
def test_crops_and_flips_of_uint8_images_cross_as_uint8_and_normalize_to_the_host_values_bit_for_bit(crop):
  host = first_train_batch(preprocessing(False, **crop))
  sent = first_train_batch(preprocessing(True, **crop))
  assert host.dtype == np.float32 and sent.dtype == np.uint8
  np.testing.assert_array_equal(preprocessing(True).on_device(tf.constant(sent)).numpy(), host)
  evaluation = pipeline.eval_dataset(IMAGES, global_batch_size=16, preprocessing=preprocessing(True, **crop))
  features, _, _ = next(iter(evaluation))
  assert features.dtype == tf.uint8
  np.testing.assert_array_equal(features.numpy(), IMAGES.features[:16])


def test_resized_images_cross_rounded_to_whole_pixel_values():
  """A resize makes values between pixel levels; they cross rounded, as PIL-based pipelines round them."""
  host = first_train_batch(ImagePreprocessing(image_size=12, normalize_on_device=False))  # [0, 1] floats
  sent = first_train_batch(ImagePreprocessing(image_size=12, normalize_on_device=True))
  np.testing.assert_array_equal(sent, np.round(host * np.float32(255)).astype(np.uint8))  # in float32
  assert 0 < np.mean(host * 255 != np.round(host * 255))  # the resize did leave the pixel grid


def test_the_probe_examples_stay_normalized_on_the_host():
  """The Monitor's and the loss probe's examples feed the model directly: normalized floats either way."""
  host, labels = pipeline.first_examples(IMAGES, 5, preprocessing(False))
  sent, same_labels = pipeline.first_examples(IMAGES, 5, preprocessing(True))
  np.testing.assert_array_equal(sent, host)
  np.testing.assert_array_equal(same_labels, labels)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_compiled_step_normalizes_every_pixel_value_within_1e_6_of_the_host(jit_compile):
  """Grappler and XLA rewrite `(x / 255 - mean) / std` (a division into a multiplication by the
  reciprocal, the mean folded into an offset): in a compiled step half the values move by a few ulps
  of the values' scale (measured: at most 7.2e-7). This bounds the difference; it is why the recipes
  with published numbers (CIFAR) keep normalizing on the host."""
  pixels = tf.constant(np.tile(np.arange(256, dtype=np.uint8)[:, None, None, None], (1, 2, 2, 3)))
  host = next(iter(tf.data.Dataset.from_tensors(pixels).map(preprocessing(False).normalize))).numpy()
  device = tf.function(preprocessing(True).on_device, jit_compile=jit_compile)(pixels).numpy()
  assert np.max(np.abs(device - host)) <= 1e-6


def test_random_erasing_noise_cannot_cross_as_pixels():
  with pytest.raises(ValueError, match="normalize_on_device.*random_erasing=0.25"):
    ImagePreprocessing(normalize_on_device=True, random_erasing=0.25)
