"""RandAugment as timm applies it for DeiT (`rand-m9-mstd0.5-inc1`), stateless per example.

timm's `rand_augment_transform('rand-m9-mstd0.5-inc1')` (Cubuk et al. 2020, in timm's variant): for
each image, `num_layers` (2) operations are chosen uniformly with replacement from the 15 of
`OPERATIONS`; each is applied with probability 1/2, at a magnitude drawn per application from
`N(magnitude, magnitude_std)` (9, 0.5) and clipped to [0, 10]. `inc1` selects the "increasing"
variants, whose strength grows with the magnitude. The operations follow PIL's definitions
(`ImageOps`, `ImageEnhance`, `Image.transform`), which timm calls, on 8-bit values: the image is
rounded to 0..255 levels first, as PIL holds it, and returned in [0, 1].

Where it differs from timm: the geometric operations (rotate, shear, translate) interpolate
bilinearly (TensorFlow's projective transform has no bicubic; DeiT's timm uses bicubic), filling
with the dataset mean as timm does. The draws come from the example's stateless seed, so runs stay
exactly resumable and replica-invariant.
"""

from __future__ import annotations

import functools
import math
import typing

import tensorflow as tf

MAX_LEVEL = 10.0  # timm's _LEVEL_DENOM and default magnitude_max
OPERATIONS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
              "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
              "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


class Plan(typing.NamedTuple):
  """One image's draws: per layer, the operation's index, whether it applies, its magnitude and sign."""
  operations: tf.Tensor  # int32 (num_layers,)
  applied: tf.Tensor  # bool (num_layers,)
  magnitudes: tf.Tensor  # float32 (num_layers,), clipped to [0, MAX_LEVEL]
  negated: tf.Tensor  # bool (num_layers,): timm's `_randomly_negate`


def plan(seed: tf.Tensor, num_layers: int, magnitude: float, magnitude_std: float) -> Plan:
  """The stateless draws of one image's RandAugment."""
  operation_key, apply_key, magnitude_key, sign_key = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  operations = tf.random.stateless_uniform([num_layers], operation_key, 0, len(OPERATIONS), tf.int32)
  applied = tf.random.stateless_uniform([num_layers], apply_key) < 0.5
  noise = tf.random.stateless_normal([num_layers], magnitude_key) * magnitude_std
  magnitudes = tf.clip_by_value(magnitude + noise, 0.0, MAX_LEVEL)
  negated = tf.random.stateless_uniform([num_layers], sign_key) < 0.5
  return Plan(operations, applied, magnitudes, negated)


def rand_augment(image: tf.Tensor, seed: tf.Tensor, *, num_layers: int = 2, magnitude: float = 9.0,
                 magnitude_std: float = 0.5, fill: typing.Sequence[float] = (0.5, 0.5, 0.5)) -> tf.Tensor:
  """`image` (float32 [0, 1], (height, width, 3)) after RandAugment with the draws of `seed`.

  `fill` is the value in [0, 1] the geometric operations show where the image moved away (timm: the
  dataset mean, rounded to 8 bits).
  """
  levels = tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0)
  fill_levels = [min(255.0, round(255.0 * value)) for value in fill]
  drawn = plan(seed, num_layers, magnitude, magnitude_std)
  for layer in range(num_layers):
    changed = tf.switch_case(drawn.operations[layer], [
        functools.partial(apply_operation, name, levels, drawn.magnitudes[layer], drawn.negated[layer],
                          fill_levels) for name in OPERATIONS])
    levels = tf.where(drawn.applied[layer], changed, levels)
  return levels / 255.0


def apply_operation(name: str, levels: tf.Tensor, level: tf.Tensor, negate: tf.Tensor,
                    fill: typing.Sequence[float]) -> tf.Tensor:
  """timm's operation `name` at magnitude `level` (0..10) on 8-bit values (float32 0..255, (h, w, 3))."""
  signed = lambda value: tf.where(negate, -value, value)  # noqa: E731 -- timm's _randomly_negate
  fraction = level / MAX_LEVEL
  if name == "AutoContrast":
    return _per_channel_lut(levels, _autocontrast_lut)
  if name == "Equalize":
    return _per_channel_lut(levels, _equalize_lut)
  if name == "Invert":
    return 255.0 - levels
  if name == "PosterizeIncreasing":
    bits = 4 - tf.cast(tf.floor(fraction * 4), tf.int32)
    step = tf.cast(tf.bitwise.left_shift(1, 8 - bits), tf.float32)
    return tf.floor(levels / step) * step
  if name == "SolarizeIncreasing":
    threshold = 256.0 - tf.floor(fraction * 256.0)
    return tf.where(levels < threshold, levels, 255.0 - levels)
  if name == "SolarizeAdd":
    return tf.where(levels < 128.0, tf.minimum(levels + tf.floor(fraction * 110.0), 255.0), levels)
  if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
    factor = tf.maximum(0.1, 1.0 + signed(fraction * 0.9))
    return _blend(_degenerate(name, levels), levels, factor)
  height, width = tf.cast(tf.shape(levels)[0], tf.float32), tf.cast(tf.shape(levels)[1], tf.float32)
  if name == "Rotate":
    angle = -signed(fraction * 30.0) * math.pi / 180.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    center_x, center_y = width / 2.0, height / 2.0
    matrix = [cos, sin, center_x - cos * center_x - sin * center_y,
              -sin, cos, center_y + sin * center_x - cos * center_y]
  elif name == "ShearX":
    matrix = [1.0, signed(fraction * 0.3), 0.0, 0.0, 1.0, 0.0]
  elif name == "ShearY":
    matrix = [1.0, 0.0, 0.0, signed(fraction * 0.3), 1.0, 0.0]
  elif name == "TranslateXRel":
    matrix = [1.0, 0.0, signed(fraction * 0.45) * width, 0.0, 1.0, 0.0]
  elif name == "TranslateYRel":
    matrix = [1.0, 0.0, 0.0, 0.0, 1.0, signed(fraction * 0.45) * height]
  else:
    raise ValueError(f"unknown RandAugment operation {name!r}; valid: {OPERATIONS}")
  return _pil_affine(levels, matrix, fill)


def _per_channel_lut(levels: tf.Tensor, lut_of) -> tf.Tensor:
  """Each channel through the 256-entry table `lut_of(its histogram)`, as PIL's per-band `point`."""
  channels = []
  for channel in tf.unstack(tf.cast(levels, tf.int32), axis=-1):
    histogram = tf.math.bincount(tf.reshape(channel, [-1]), minlength=256, maxlength=256)
    channels.append(tf.gather(lut_of(histogram), channel))
  return tf.cast(tf.stack(channels, axis=-1), tf.float32)


def _autocontrast_lut(histogram: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.autocontrast` (cutoff 0): the band's [min, max] stretched to [0, 255], truncated."""
  present = tf.where(histogram > 0)[:, 0]
  low, high = tf.cast(present[0], tf.float32), tf.cast(present[-1], tf.float32)
  scale = 255.0 / tf.maximum(high - low, 1.0)
  identity = tf.range(256, dtype=tf.float32)
  stretched = tf.clip_by_value(tf.floor(identity * scale - low * scale), 0.0, 255.0)
  return tf.cast(tf.where(high > low, stretched, identity), tf.int32)


def _equalize_lut(histogram: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.equalize`: `step = (total - count of the last used level) // 255`, then
  `lut[i] = (step // 2 + count below i) // step`; the identity if step is 0."""
  present = tf.boolean_mask(histogram, histogram > 0)
  step = (tf.reduce_sum(present) - present[-1]) // 255
  below = tf.cumsum(histogram, exclusive=True)
  equalized = (step // 2 + below) // tf.maximum(step, 1)
  return tf.where(step > 0, tf.minimum(equalized, 255), tf.range(256))


def _degenerate(name: str, levels: tf.Tensor) -> tf.Tensor:
  """The image `ImageEnhance` blends with: grayscale (Color), its mean gray (Contrast), black
  (Brightness), or PIL's SMOOTH filter with the border kept (Sharpness)."""
  if name == "BrightnessIncreasing":
    return tf.zeros_like(levels)
  gray = _luminance(levels)
  if name == "ColorIncreasing":
    return tf.repeat(gray[:, :, None], 3, axis=-1)
  if name == "ContrastIncreasing":
    return tf.fill(tf.shape(levels), tf.floor(tf.reduce_mean(gray) + 0.5))
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.round(tf.nn.depthwise_conv2d(levels[None], kernel, [1, 1, 1, 1], "VALID")[0])
  return tf.pad(smooth - levels[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + levels


def _luminance(levels: tf.Tensor) -> tf.Tensor:
  """PIL's RGB -> L: `(R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`."""
  weighted = tf.cast(levels, tf.int32) * tf.constant([19595, 38470, 7471])
  return tf.cast(tf.bitwise.right_shift(tf.reduce_sum(weighted, axis=-1) + 0x8000, 16), tf.float32)


def _blend(degenerate: tf.Tensor, levels: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `Image.blend(degenerate, image, factor)`: `degenerate + factor * (image - degenerate)`,
  truncated and clipped to 0..255."""
  return tf.clip_by_value(tf.floor(degenerate + factor * (levels - degenerate)), 0.0, 255.0)


def _pil_affine(levels: tf.Tensor, matrix: list, fill: typing.Sequence[float]) -> tf.Tensor:
  """PIL `Image.transform(size, AFFINE, (a, b, c, d, e, f))`: output pixel centre (x, y) samples the
  input at (a x + b y + c, d x + e y + f); bilinear, `fill` outside. TensorFlow maps pixel indices, so
  the centres' half-pixel offsets move into the translation."""
  a, b, c, d, e, f = matrix
  transform = tf.stack([tf.cast(v, tf.float32) for v in (a, b, c + 0.5 * (a + b) - 0.5, d, e,
                                                         f + 0.5 * (d + e) - 0.5, 0.0, 0.0)])
  shifted = levels - tf.constant(fill, tf.float32)  # TensorFlow fills with one scalar: fill 0 around 0
  moved = tf.raw_ops.ImageProjectiveTransformV3(
      images=shifted[None], transforms=transform[None], output_shape=tf.shape(levels)[:2],
      fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
  return tf.clip_by_value(tf.round(moved + tf.constant(fill, tf.float32)), 0.0, 255.0)


def parse(spec: str) -> dict:
  """timm's config string, e.g. 'rand-m9-mstd0.5-inc1' (`n` layers, default 2), as `rand_augment`'s
  keywords; only the increasing operation set (`inc1`) exists here, and it must be asked for."""
  parts = spec.split("-")
  settings = {"num_layers": 2, "magnitude_std": 0.0}
  increasing = False
  try:
    if parts[0] != "rand":
      raise ValueError
    for part in parts[1:]:
      if part.startswith("mstd"):
        settings["magnitude_std"] = float(part[4:])
      elif part.startswith("m"):
        settings["magnitude"] = float(part[1:])
      elif part.startswith("n"):
        settings["num_layers"] = int(part[1:])
      elif part == "inc1":
        increasing = True
      else:
        raise ValueError
  except ValueError:
    raise ValueError(f"RandAugment spec {spec!r}: expected timm's form "
                     "'rand-m<magnitude>[-mstd<std>][-n<layers>]-inc1'") from None
  if "magnitude" not in settings or not increasing:
    raise ValueError(f"RandAugment spec {spec!r} needs a magnitude (m9) and the increasing operations "
                     "(inc1), the only set implemented")
  return settings
