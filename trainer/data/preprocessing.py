"""Image preprocessing and augmentation, seeded per example so runs stay exact and replica-invariant.

Every random choice (crop window, flip) is a stateless op whose seed is folded from the run's seed
and the example's *position* in the training stream (its global position for random-access
splits; (worker, position) for sequential ones). An augmented example therefore does not depend
on which replica or worker reads it, on the thread that runs the map, or on whether the run was
resumed: the same position always gets the same crop.

Stored images are uint8 (or float32); the model always receives float32 in [0, 1], optionally
normalized by the dataset's per-channel mean and standard deviation.
"""

from __future__ import annotations

import math
from typing import Sequence

import gin
import tensorflow as tf

from trainer.common import checks
from trainer.data import rand_augment as rand_augment_ops

TRAIN_CROPS = ("none", "pad_and_crop", "random_resized")
CROP_SAMPLERS = ("inception", "torchvision")
_BOX_TRIES = 10
# timm's RandomErasing defaults (DeiT's recipe sets only the probability): the erased box covers
# U(0.02, 1/3) of the image with aspect ratio (height / width) log-uniform in (0.3, 1 / 0.3), 10 tries.
ERASING_AREA_RANGE = (0.02, 1 / 3)
ERASING_ASPECT_RANGE = (0.3, 1 / 0.3)
_RAND_AUGMENT_TAG = 0xAA  # likewise for RandAugment's draws
_ERASING_TAG = 0xE5  # folded into an example's seed: its erasing draws, apart from the crop's and flip's
EVAL_CROPS = ("none", "center")
_AUGMENT_SALT = 0x0CCA  # Keeps augmentation draws apart from the data order's (seed, epoch) draws.


@gin.configurable
class ImagePreprocessing:
  """What happens to each image between storage and the model.

  Args:
    image_size: side of the square images the model sees; None keeps the stored size (which must
      then be the same for every image). Needed for images of varying size (ImageNet).
    train_crop: 'none'; 'pad_and_crop' (CIFAR: zero-pad by `padding` pixels, crop back to size at a
      random offset); or 'random_resized' (ImageNet: a random window covering `area_range` of the
      image with aspect ratio in `aspect_ratio_range`, resized to `image_size`).
    padding: pixels of zero padding for 'pad_and_crop'.
    area_range, aspect_ratio_range: the window distribution of 'random_resized'.
    crop_sampler: how 'random_resized' samples its window within those ranges. 'inception' (the
      default): TensorFlow's `sample_distorted_bounding_box`, the Inception/TF-slim/big_vision crop;
      'torchvision': torchvision's `RandomResizedCrop` (area uniform in `area_range`, aspect ratio
      log-uniform in `aspect_ratio_range`, 10 tries, then a center crop), for PyTorch ports. The two
      differ in distribution, not in range: on a 300x400 image with the default ranges the mean
      window covers 0.37 of the image with 'inception' and 0.43 with 'torchvision'
      (docs/REGULARIZATION.md).
    flip: flip each training image left-right with probability 1/2.
    eval_crop: 'none' (resize to `image_size` if given) or 'center' (the central square covering
      `crop_fraction` of the shorter side, resized to `image_size`: the standard ImageNet eval crop,
      224 of 256).
    crop_fraction: see `eval_crop`.
    antialias: resize (to `image_size`) bilinearly with an antialiasing filter when shrinking (the
      default; as PIL and torchvision do), or False for plain bilinear interpolation (as TF Model
      Garden and big_vision do): about 1.5x the images per CPU-second on ImageNet-sized JPEGs
      (docs/PERFORMANCE.md, "Input throughput"), with aliasing in windows much larger than the output.
    mean, std: per-channel statistics in [0, 1] units; images become (x - mean) / std.
    rand_augment: timm's RandAugment config string, e.g. 'rand-m9-mstd0.5-inc1' (DeiT's), or None
      (off): `trainer.data.rand_augment`. Applied after crop and flip, before erasing; the geometric
      operations fill with `mean` (0.5 without it).
    random_erasing: the probability (in [0, 1]; default 0, off) that a training image gets one box
      replaced by noise, as timm's `RandomErasing(probability, mode='pixel')`, which DeiT applies with
      0.25: the box covers U(0.02, 1/3) of the image with aspect ratio log-uniform in (0.3, 1/0.3)
      (10 tries; if none fits, nothing is erased), placed uniformly; its pixels are drawn so that
      after normalization they are N(0, 1) per channel, as timm's noise on the normalized tensor
      (N(0, 1) in [0, 1] units without mean/std). Applied after crop and flip.
    repeated_augmentation: how many times each example an epoch draws is read in a row (>= 1; default
      1, off): DeiT's repeated augmentation (Hoffer et al. 2020; its `RASampler`, 3 repeats). An epoch
      keeps its length, `num_examples` reads: the first ceil(num_examples / repeats) examples of its
      permutation, each `repeats` times in a row, so the copies sit in the same global batch (as
      RASampler puts them on different devices at the same step), each augmented differently (their
      positions differ). Needs a split read by index.
    normalize_on_device: send images to the device as uint8 and normalize them there, at the start of
      the replica step (`on_device`): a quarter of float32's host-to-device traffic. Augmented images
      (resized, RandAugment) are rounded to whole pixel values first, as PIL-based pipelines
      (torchvision, timm) do before `ToTensor`; crops and flips of stored uint8 images lose nothing.
      On the device the same `(x / 255 - mean) / std` is computed, but a compiled step rounds it
      differently from the host (within 1e-6, tests/test_device_normalization.py). Default False: the
      host normalizes and float32 crosses. Not with `random_erasing` (its noise is not a pixel value).
  """

  def __init__(self, *, image_size: int | None = None, train_crop: str = "none", padding: int = 4,
               area_range: Sequence[float] = (0.08, 1.0),
               aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3), crop_sampler: str = "inception",
               flip: bool = False,
               eval_crop: str = "none", crop_fraction: float = 0.875, antialias: bool = True,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               rand_augment: str | None = None, random_erasing: float = 0.0,
               repeated_augmentation: int = 1, normalize_on_device: bool = False):
    owner = "ImagePreprocessing"
    if image_size is not None and int(image_size) < 1:
      raise ValueError(f"{owner}.image_size must be positive or None, got {image_size}")
    if train_crop not in TRAIN_CROPS:
      raise ValueError(f"{owner}.train_crop={train_crop!r} is not one of {TRAIN_CROPS}")
    if eval_crop not in EVAL_CROPS:
      raise ValueError(f"{owner}.eval_crop={eval_crop!r} is not one of {EVAL_CROPS}")
    if crop_sampler not in CROP_SAMPLERS:
      raise ValueError(f"{owner}.crop_sampler={crop_sampler!r} is not one of {CROP_SAMPLERS}")
    if train_crop == "random_resized" and image_size is None:
      raise ValueError(f"{owner}.train_crop='random_resized' needs {owner}.image_size")
    if padding < 0:
      raise ValueError(f"{owner}.padding must be >= 0, got {padding}")
    if not 0 < crop_fraction <= 1:
      raise ValueError(f"{owner}.crop_fraction must be in (0, 1], got {crop_fraction}")
    if (mean is None) != (std is None) or (std is not None and min(std) <= 0):
      raise ValueError(f"{owner}.mean and {owner}.std go together, with std > 0; got {mean}, {std}")
    if not 0.0 <= random_erasing <= 1.0:
      raise ValueError(f"{owner}.random_erasing must be a probability in [0, 1], got {random_erasing}")
    if normalize_on_device and random_erasing > 0:
      raise ValueError(f"{owner}.normalize_on_device sends uint8 pixels, which cannot carry the noise of "
                       f"{owner}.random_erasing={random_erasing} (N(0, 1) after normalization, beyond "
                       "[0, 1]); bind one of them off")
    self.normalize_on_device = bool(normalize_on_device)
    self.image_size = None if image_size is None else int(image_size)
    self.random_erasing = float(random_erasing)
    self.rand_augment = rand_augment
    try:
      self._rand_augment_settings = None if rand_augment is None else rand_augment_ops.parse(rand_augment)
    except ValueError as error:
      raise ValueError(f"{owner}.rand_augment: {error}") from None
    self.repeated_augmentation = checks.integer(owner, "repeated_augmentation", repeated_augmentation,
                                                minimum=1)
    self.train_crop = train_crop
    self.padding = int(padding)
    self.area_range = tuple(float(v) for v in area_range)
    self.aspect_ratio_range = tuple(float(v) for v in aspect_ratio_range)
    self.crop_sampler = crop_sampler
    self.flip = bool(flip)
    self.eval_crop = eval_crop
    self.crop_fraction = float(crop_fraction)
    self.antialias = bool(antialias)
    self.mean = None if mean is None else tuple(float(v) for v in mean)
    self.std = None if std is None else tuple(float(v) for v in std)

  def per_example(self, training: bool) -> bool:
    """Whether images need work one at a time (a random or resizing step) before they can be batched."""
    random = training and (self.train_crop != "none" or self.flip or self.random_erasing > 0
                           or self.rand_augment is not None)
    return random or self.image_size is not None or (not training and self.eval_crop != "none")

  def output_shape(self, example_shape: tuple) -> tuple:
    """The per-example shape the model sees; raises ValueError if images vary and nothing resizes."""
    if len(example_shape) != 3 and (self.per_example(training=True) or self.per_example(training=False)):
      raise ValueError(f"ImagePreprocessing crops, flips and resizes images of shape (height, width, "
                       f"channels); these features have per-example shape {list(example_shape)}")
    if self.rand_augment is not None and example_shape[-1] != 3:
      raise ValueError(f"ImagePreprocessing.rand_augment needs RGB images (3 channels), as timm's does; "
                       f"these have per-example shape {list(example_shape)}")
    if self.image_size is not None:
      return (self.image_size, self.image_size, example_shape[-1])
    if None in example_shape:
      raise ValueError(f"images have varying size (per-example shape {list(example_shape)}): bind "
                       "ImagePreprocessing.image_size (and Trainer.preprocessing = @ImagePreprocessing())")
    return tuple(example_shape)

  def example(self, image: tf.Tensor, seed: tf.Tensor | None) -> tf.Tensor:
    """One image, float32 in [0, 1] (not yet normalized): augmented if `seed` is given (training)."""
    image = to_unit_float(image)
    if seed is None:
      return self._eval_crop(image)
    crop_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if self.train_crop == "pad_and_crop":
      size = tf.shape(image)
      if self.image_size is not None:
        image = self._resize(image)
        size = tf.shape(image)
      padded = tf.pad(image, [[self.padding] * 2, [self.padding] * 2, [0, 0]])
      image = tf.image.stateless_random_crop(padded, size, seed=crop_seed)
    elif self.train_crop == "random_resized":
      window = tf.slice(image, *self.crop_window(tf.shape(image), crop_seed))
      window.set_shape([None, None, image.shape[-1]])  # a size tensor loses the static channel count
      image = self._resize(window)
    elif self.image_size is not None:
      image = self._resize(image)
    return self._after_crop(image, seed)

  def decodes_window(self, training: bool) -> bool:
    """Whether training images are best kept encoded until `encoded_example` decodes their crop window."""
    return training and self.train_crop == "random_resized"

  def encoded_example(self, encoded: tf.Tensor, channels: int, seed: tf.Tensor) -> tf.Tensor:
    """`example(decoded image, seed)` for a training image stored encoded (a scalar string: JPEG or PNG),
    decoding only the random-resized crop's window of a JPEG (`tf.image.decode_and_crop_jpeg`, as TF
    Model Garden and big_vision do) instead of the whole image.

    The window is drawn from the image's size (read from the JPEG header) with the same stateless draws
    as `example`'s, so an example gets the same window either way; a PNG (or another format) is decoded
    whole and cropped. Only for `train_crop='random_resized'` (`decodes_window`).
    """
    crop_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

    def decode_jpeg_window() -> tf.Tensor:
      begin, size = self.crop_window(tf.image.extract_jpeg_shape(encoded), crop_seed)
      window = tf.stack([begin[0], begin[1], size[0], size[1]])
      return tf.image.decode_and_crop_jpeg(encoded, window, channels=channels)

    def decode_then_crop() -> tf.Tensor:
      image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
      return tf.slice(image, *self.crop_window(tf.shape(image), crop_seed))

    window = tf.cond(tf.io.is_jpeg(encoded), decode_jpeg_window, decode_then_crop)
    window.set_shape([None, None, channels])
    return self._after_crop(self._resize(to_unit_float(window)), seed)

  def crop_window(self, shape: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The random-resized crop's window of an image of `shape` (height, width, ...): `begin` and `size`
    for `tf.slice`, drawn by `crop_sampler` from `seed` and the height and width alone."""
    if self.crop_sampler == "torchvision":
      return torchvision_window(shape, seed, self.area_range, self.aspect_ratio_range)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=self.aspect_ratio_range, area_range=self.area_range,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return begin, size

  def _resize(self, image: tf.Tensor) -> tf.Tensor:
    return tf.image.resize(image, [self.image_size] * 2, method="bilinear", antialias=self.antialias)

  def _after_crop(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The augmentation after the crop: flip, RandAugment, erasing, each with its own draws from `seed`."""
    _, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if self.flip:
      image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    if self._rand_augment_settings is not None:
      image = rand_augment_ops.rand_augment(
          image, tf.random.experimental.stateless_fold_in(seed, _RAND_AUGMENT_TAG),
          fill=self.mean or (0.5, 0.5, 0.5), **self._rand_augment_settings)
    if self.random_erasing > 0:
      image = self._random_erase(image, tf.random.experimental.stateless_fold_in(seed, _ERASING_TAG))
    return image

  def epoch_order(self, permutation: tf.Tensor) -> tf.Tensor:
    """The examples an epoch reads, in order, from its permutation: each of the first
    ceil(n / repeats) `repeated_augmentation` times in a row, n reads in all (see the class)."""
    repeats = self.repeated_augmentation
    if repeats == 1:
      return permutation
    count = tf.size(permutation)
    return tf.repeat(permutation[:(count + repeats - 1) // repeats], repeats)[:count]

  def normalize(self, images: tf.Tensor) -> tf.Tensor:
    """A batch (or one example) as float32 [0, 1] images, standardized if mean/std are given."""
    images = to_unit_float(images)
    if self.mean is None:
      return images
    return (images - tf.constant(self.mean)) / tf.constant(self.std)

  def transfer(self, images: tf.Tensor) -> tf.Tensor:
    """A host batch as it crosses to the device: `normalize`d, or uint8 with `normalize_on_device`."""
    return to_pixels(images) if self.normalize_on_device else self.normalize(images)

  def on_device(self, features: tf.Tensor) -> tf.Tensor:
    """What the replica step does first to a `transfer`red batch: `normalize` it if it is still uint8."""
    return self.normalize(features) if self.normalize_on_device else features

  def _random_erase(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`image` with `erasing_box` filled by noise that normalizes to N(0, 1) (see `random_erasing`)."""
    box_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.shape(image)
    begin, size = erasing_box(shape, box_seed, self.random_erasing)
    rows, columns = tf.range(shape[0]), tf.range(shape[1])
    inside = (((rows >= begin[0]) & (rows < begin[0] + size[0]))[:, None]
              & ((columns >= begin[1]) & (columns < begin[1] + size[1]))[None, :])
    noise = tf.random.stateless_normal(shape, noise_seed)
    if self.mean is not None:
      noise = noise * tf.constant(self.std) + tf.constant(self.mean)
    return tf.where(inside[:, :, None], noise, image)

  def _eval_crop(self, image: tf.Tensor) -> tf.Tensor:
    if self.eval_crop == "center":
      shape = tf.shape(image)
      side = tf.cast(tf.cast(tf.minimum(shape[0], shape[1]), tf.float32) * self.crop_fraction, tf.int32)
      top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
      image = image[top:top + side, left:left + side]
    return self._resize(image) if self.image_size is not None else image


def torchvision_window(shape: tf.Tensor, seed: tf.Tensor, area_range: Sequence[float],
                       aspect_ratio_range: Sequence[float]) -> tuple[tf.Tensor, tf.Tensor]:
  """torchvision's `RandomResizedCrop.get_params`, stateless: the window's `begin` and `size` for `tf.slice`.

  Ten tries at once (`_box_tries`, aspect ratio = width / height): `w = round(sqrt(area * ratio))`,
  `h = round(sqrt(area / ratio))`; the first try that fits the image is placed uniformly. If none fits,
  the central window of the image clamped to the aspect ratio range.
  """
  height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  area_key, ratio_key, row_key, column_key = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
  widths, heights = _box_tries(height * width, area_key, ratio_key, area_range, aspect_ratio_range)
  fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
  first = tf.argmax(tf.cast(fits, tf.int32))  # the first True (0 if none: then unused)
  image_ratio, (min_ratio, max_ratio) = width / height, aspect_ratio_range
  fallback_w = tf.where(image_ratio > max_ratio, tf.round(height * max_ratio), width)
  fallback_h = tf.where(image_ratio < min_ratio, tf.round(width / min_ratio), height)
  found = tf.reduce_any(fits)
  w = tf.cast(tf.where(found, widths[first], fallback_w), tf.int32)
  h = tf.cast(tf.where(found, heights[first], fallback_h), tf.int32)
  full_height, full_width = shape[0], shape[1]
  top = tf.where(found, tf.random.stateless_uniform([], row_key, 0, full_height - h + 1, tf.int32),
                 (full_height - h) // 2)
  left = tf.where(found, tf.random.stateless_uniform([], column_key, 0, full_width - w + 1, tf.int32),
                  (full_width - w) // 2)
  return tf.stack([top, left, 0]), tf.stack([h, w, -1])


def _box_tries(area: tf.Tensor, area_key: tf.Tensor, ratio_key: tf.Tensor, area_range: Sequence[float],
               ratio_range: Sequence[float]) -> tuple[tf.Tensor, tf.Tensor]:
  """10 tries of torchvision's and timm's box draw: target area `~ U(area_range) * area`, ratio
  `~ exp(U(log ratio_range))`; returns `round(sqrt(target * ratio))` and `round(sqrt(target / ratio))`
  (half to even, as Python's `round`), computed in float64 from float32 draws as their Python floats are."""
  fractions = tf.random.stateless_uniform([_BOX_TRIES], area_key, *area_range)
  low, high = (math.log(r) for r in ratio_range)
  log_ratios = tf.random.stateless_uniform([_BOX_TRIES], ratio_key, low, high)
  ratios = tf.exp(tf.cast(log_ratios, tf.float64))
  targets = area * tf.cast(fractions, tf.float64)
  return tf.round(tf.sqrt(targets * ratios)), tf.round(tf.sqrt(targets / ratios))


def erasing_box(shape: tf.Tensor, seed: tf.Tensor, probability: float) -> tuple[tf.Tensor, tf.Tensor]:
  """timm's `RandomErasing` box for an image of `shape`, stateless: `begin` (top, left) and `size`
  (height, width), size (0, 0) when the image is not erased (probability `1 - probability`, or no try fit).

  Ten tries (`_box_tries` with `ERASING_AREA_RANGE`, `ERASING_ASPECT_RANGE`, aspect ratio = height /
  width): `h = round(sqrt(area * ratio))`, `w = round(sqrt(area / ratio))`; the first with `h < height
  and w < width` is placed uniformly (top in [0, height - h], left in [0, width - w]).
  """
  apply_key, area_key, ratio_key, row_key, column_key = tf.unstack(
      tf.random.experimental.stateless_split(seed, 5))
  height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  heights, widths = _box_tries(height * width, area_key, ratio_key, ERASING_AREA_RANGE, ERASING_ASPECT_RANGE)
  fits = (heights < height) & (widths < width)
  first = tf.argmax(tf.cast(fits, tf.int32))
  erase = tf.reduce_any(fits) & (tf.random.stateless_uniform([], apply_key) < probability)
  h = tf.where(erase, tf.cast(heights[first], tf.int32), 0)
  w = tf.where(erase, tf.cast(widths[first], tf.int32), 0)
  top = tf.random.stateless_uniform([], row_key, 0, shape[0] - h + 1, tf.int32)
  left = tf.random.stateless_uniform([], column_key, 0, shape[1] - w + 1, tf.int32)
  return tf.stack([top, left]), tf.stack([h, w])


def to_unit_float(images: tf.Tensor) -> tf.Tensor:
  """uint8 0..255 -> float32 [0, 1]; float32 stays as it is."""
  if images.dtype == tf.uint8:
    return tf.cast(images, tf.float32) / 255.0
  return tf.cast(images, tf.float32)


def to_pixels(images: tf.Tensor) -> tf.Tensor:
  """float32 [0, 1] -> uint8 0..255, rounded to the nearest value (exact for `to_unit_float`'s output);
  uint8 stays as it is."""
  if images.dtype == tf.uint8:
    return images
  return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def example_seed(seed: int, position: tf.Tensor, worker: int = 0) -> tf.Tensor:
  """The stateless seed of the example at `position` of `worker`'s training stream."""
  base = tf.constant([seed, _AUGMENT_SALT], tf.int64)
  return tf.random.experimental.stateless_fold_in(
      tf.random.experimental.stateless_fold_in(base, worker), position)
