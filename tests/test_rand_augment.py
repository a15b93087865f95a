"""RandAugment (trainer.data.rand_augment) against its definitions: each operation against PIL, whose
functions timm calls, and the per-image draws (operation, application, magnitude noise, sign) in
distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from trainer.data import ImagePreprocessing, preprocessing, rand_augment

Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
ImageEnhance = pytest.importorskip("PIL.ImageEnhance")
ImageOps = pytest.importorskip("PIL.ImageOps")

HEIGHT, WIDTH = 30, 40
FILL = (124, 116, 104)  # timm: the ImageNet mean in 8 bits
IMAGE = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def _affine(name: str, level: float, negate: bool) -> tuple:
  """timm's affine data `(a, b, c, d, e, f)` for a geometric operation (PIL's rotate written out)."""
  signed = (-1 if negate else 1) * level / 10
  if name == "Rotate":
    angle = -math.radians(signed * 30)
    cos, sin, cx, cy = math.cos(angle), math.sin(angle), WIDTH / 2, HEIGHT / 2
    return cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy
  return {"ShearX": (1, signed * 0.3, 0, 0, 1, 0), "ShearY": (1, 0, 0, signed * 0.3, 1, 0),
          "TranslateXRel": (1, 0, signed * 0.45 * WIDTH, 0, 1, 0),
          "TranslateYRel": (1, 0, 0, 0, 1, signed * 0.45 * HEIGHT)}[name]


def _timm_operation(name: str, level: float, negate: bool) -> np.ndarray:
  """timm's `auto_augment` operation at magnitude `level` on IMAGE, through PIL (bilinear resampling)."""
  image, fraction, sign = Image.fromarray(IMAGE), level / 10, -1 if negate else 1
  if name in GEOMETRIC:
    out = image.transform(image.size, Image.AFFINE, _affine(name, level, negate), resample=Image.BILINEAR,
                          fillcolor=FILL)
  elif name in ("AutoContrast", "Equalize", "Invert"):
    out = getattr(ImageOps, name.lower())(image)
  elif name == "PosterizeIncreasing":
    out = ImageOps.posterize(image, 4 - int(fraction * 4))
  elif name == "SolarizeIncreasing":
    out = ImageOps.solarize(image, 256 - int(fraction * 256))
  elif name == "SolarizeAdd":
    add = int(fraction * 110)
    out = image.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)
  else:  # ColorIncreasing, ContrastIncreasing, BrightnessIncreasing, SharpnessIncreasing
    out = getattr(ImageEnhance, name[:-len("Increasing")])(image).enhance(max(0.1, 1 + sign * fraction * 0.9))
  return np.asarray(out).astype(np.float64)


def _sampled_inside(name: str, level: float, negate: bool) -> np.ndarray:
  """Output pixels whose source point lies within the input's pixel centres (not in the half-pixel band
  at the edge, where PIL switches to the fill and TensorFlow blends into it)."""
  a, b, c, d, e, f = _affine(name, level, negate)
  rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
  x, y = a * columns + b * rows + c - 0.5, d * columns + e * rows + f - 0.5
  return (x >= 0) & (x <= WIDTH - 1) & (y >= 0) & (y <= HEIGHT - 1)


@pytest.mark.parametrize("level, negate", [(9.3, False), (4.0, True)])
@pytest.mark.parametrize("name", rand_augment.OPERATIONS)
def test_each_operation_equals_timm_s_through_pil(name, level, negate):
  """Every operation within 1 level (of 255) of PIL's on a random 8-bit image. The geometric ones: within
  1 level wherever the source point is inside the image, and within 2 levels on average over all pixels
  (the edge band: PIL cuts to the fill, TensorFlow interpolates into it)."""
  got = rand_augment.apply_operation(name, tf.constant(IMAGE, tf.float32), tf.constant(level),
                                     tf.constant(negate), FILL).numpy()
  expected = _timm_operation(name, level, negate)
  difference = np.abs(got - expected)
  if name in GEOMETRIC:
    inside = _sampled_inside(name, level, negate)
    assert difference[inside].max() <= 1 and difference.mean() <= 2, (difference[inside].max(),
                                                                      difference.mean())
  else:
    assert difference.max() <= 1


def test_draws_follow_rand_m9_mstd0_5():
  """3,000 images' plans for 'rand-m9-mstd0.5-inc1': the 15 operations uniform (chi-square, p > 0.001),
  each applied with probability 1/2 and negated with probability 1/2 (4 standard deviations), the
  magnitude N(9, 0.5) clipped to [0, 10]: the share at 10 within 4 standard deviations of P(N > 10),
  the rest Kolmogorov-Smirnov against the normal truncated at 10 (p > 0.001)."""
  settings = rand_augment.parse("rand-m9-mstd0.5-inc1")
  assert settings == {"num_layers": 2, "magnitude": 9.0, "magnitude_std": 0.5}

  @tf.function(autograph=False)
  def plans():
    def one(position):
      return tuple(rand_augment.plan(preprocessing.example_seed(0, position), 2, 9.0, 0.5))
    return tf.map_fn(one, tf.range(3000, dtype=tf.int64),
                     fn_output_signature=(tf.int32, tf.bool, tf.float32, tf.bool))

  operations, applied, magnitudes, negated = (t.numpy().ravel() for t in plans())
  counts = np.bincount(operations, minlength=15)
  assert len(counts) == 15 and scipy.stats.chisquare(counts).pvalue > 1e-3
  for flags in (applied, negated):
    assert abs(flags.mean() - 0.5) <= 4 * math.sqrt(0.25 / len(flags))
  normal = scipy.stats.norm(9, 0.5)
  at_top = normal.sf(10)
  assert magnitudes.min() >= 0 and magnitudes.max() <= 10
  assert abs((magnitudes == 10).mean() - at_top) <= 4 * math.sqrt(at_top * (1 - at_top) / len(magnitudes))
  below = magnitudes[magnitudes < 10].astype(np.float64)
  assert scipy.stats.kstest(below, lambda x: normal.cdf(x) / normal.cdf(10)).pvalue > 1e-3


def test_rand_augment_in_preprocessing_is_stateless_and_bad_specs_are_named():
  """Per example: the same seed gives the same augmented image; another seed another one."""
  augmentation = ImagePreprocessing(rand_augment="rand-m9-mstd0.5-inc1", mean=(0.485, 0.456, 0.406),
                                    std=(0.229, 0.224, 0.225))
  image = tf.constant(IMAGE)
  first, again, other = (augmentation.example(image, preprocessing.example_seed(0, tf.constant(p, tf.int64)))
                         for p in (3, 3, 4))
  np.testing.assert_array_equal(first.numpy(), again.numpy())
  assert first.shape == (HEIGHT, WIDTH, 3) and augmentation.per_example(training=True)
  assert not np.array_equal(first.numpy(), other.numpy())
  with pytest.raises(ValueError, match="rand_augment needs RGB images"):
    augmentation.output_shape((8, 8, 1))
  for spec, message in [("rand-m9-mstd0.5", "needs a magnitude .m9. and the increasing operations"),
                        ("augmix-m5", "expected timm's form")]:
    expected = f"ImagePreprocessing.rand_augment: RandAugment spec '{spec}'.*{message}"
    with pytest.raises(ValueError, match=expected):
      ImagePreprocessing(rand_augment=spec)
