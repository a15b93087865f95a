"""Mixup and CutMix: batch transforms that train on mixtures of example pairs.

Mixup (Zhang et al., ICLR 2018) trains on `lam * x_i + (1 - lam) * x_j`; CutMix (Yun et al., ICCV
2019) pastes a box of image `x_j` into `x_i`. Either way the loss is

    lam * loss(y_i, f(x)) + (1 - lam) * loss(y_j, f(x)),

which for cross entropy (with or without label smoothing, both linear in the target) equals the loss
on the soft target `lam * onehot(y_i) + (1 - lam) * onehot(y_j)`. As in the reference
implementations, `lam ~ Beta(alpha, alpha)` is drawn once per batch and the partners `j` are a
random permutation of the batch; CutMix's box is the reference's `rand_bbox` (side `sqrt(1 - lam)`
of the image's, centred uniformly, clipped at the border) and its `lam` is then corrected to the
area actually kept.

**Within each replica's batch.** Under a distribution strategy each replica mixes its own batch with
its own draw, as the reference implementations do per device and process: no example crosses
replicas and nothing extra is communicated. The price is that a run depends on the replica count (2
replicas pair examples within halves of the global batch and draw two lams), so mixing is not
replica-invariant; everything else in the step stays exact (the loss is still averaged over the
global batch).

**As the recipes use them.** `prob` applies a transform to only that fraction of the batches (the
CutMix paper's CIFAR recipe uses `cutmix_prob` 0.5); an unmixed batch has `lam = 1` and passes through
unchanged. `MixupCutMix` is timm's `Mixup(mixup_alpha, cutmix_alpha, prob, switch_prob,
label_smoothing, mode='batch')`, which DeiT uses: per batch, with probability `prob` it mixes, by
CutMix with probability `switch_prob` and by Mixup otherwise. timm folds label smoothing into the
mixed targets, `lam * smooth(y_i) + (1 - lam) * smooth(y_j)`; since the loss above is linear in the
target, binding `softmax_cross_entropy.label_smoothing` gives exactly that loss. One difference
remains: timm pairs each example with its mirror in the batch (`x.flip(0)`), Occam with a random
permutation (the reference Mixup and CutMix codes' `randperm`); either pairs random examples of a
shuffled batch.

**Stateless draws.** The draw of a step is a pure function of (seed, step, replica):
`stateless_fold_in` of the step and then of the replica id into the key `(seed, salt)`, split into
one key per random quantity, all Philox integer draws (the same with and without XLA). The
per-batch decisions (apply, switch) come from a key folded from the same step key with a tag of their
own, so a transform applied to every batch draws exactly what it drew before `prob` existed. No RNG
state exists, so a resumed run, a restored one and a rerun mix exactly as the uninterrupted run did.
"""

from __future__ import annotations

import math
import typing

import gin
import tensorflow as tf

from trainer.common import checks
from trainer.regularization import terms

# The counter-based generator of every draw, named rather than "auto_select" (which picks per device).
# Only integer draws are used: XLA reproduces them bit for bit, not TensorFlow's float draws, so the same
# (seed, step, replica) gives the same pairs and boxes with or without `jit_compile`, and lams equal to
# float32 rounding.
_ALG = "philox"
_UNIT = 2**24  # float32 holds every multiple of 2^-24 in [0, 1) exactly
_DECISIONS = 0xDEC  # folded into a step's key for its per-batch decisions (apply, switch)


class Mixed(typing.NamedTuple):
  """A mixed batch: its features, each example's partner label, and the weight of its own label."""
  features: tf.Tensor
  partner_labels: tf.Tensor
  lam: tf.Tensor  # float32 scalar: the loss weight of the example's own label


class Box(typing.NamedTuple):
  """Rows [top, bottom) and columns [left, right) of CutMix's pasted box (int32 scalars)."""
  top: tf.Tensor
  bottom: tf.Tensor
  left: tf.Tensor
  right: tf.Tensor


def mixed_loss(loss_fn, labels: tf.Tensor, outputs: tf.Tensor, mixed: Mixed) -> tf.Tensor:
  """`lam * loss(own label) + (1 - lam) * loss(partner's label)`, per example: any per-example loss."""
  return mixed.lam * loss_fn(labels, outputs) + (1.0 - mixed.lam) * loss_fn(mixed.partner_labels, outputs)


def step_key(seed: int, salt: int, step: tf.Tensor, replica: tf.Tensor) -> tf.Tensor:
  """The stateless key of one replica's draw at `step`: `(seed, salt)` with step and replica folded in."""
  key = tf.constant([seed, salt], tf.int64)
  key = tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64), alg=_ALG)
  return tf.random.experimental.stateless_fold_in(key, tf.cast(replica, tf.int64), alg=_ALG)


def beta(key: tf.Tensor, alpha: float) -> tf.Tensor:
  """A Beta(alpha, alpha) draw (float32 scalar): `g1 / (g1 + g2)` for two Gamma(alpha) draws.

  Computed as `sigmoid(log g1 - log g2)` from log-gamma draws, which neither underflows nor divides
  0 by 0 for small alpha. `tf.random.stateless_gamma` has no XLA kernel, so the gammas come from
  `log_gamma` (from Philox integer draws only): the replica step stays XLA- and TPU-compilable.
  """
  keys = tf.random.experimental.stateless_split(key, 2, alg=_ALG)
  return tf.sigmoid(log_gamma(keys[0], alpha) - log_gamma(keys[1], alpha))


_CANDIDATES = 16


def log_gamma(key: tf.Tensor, alpha: float) -> tf.Tensor:
  """log of a Gamma(alpha, 1) draw: Marsaglia and Tsang's method (ACM TOMS 2000), float32, stateless.

  For shape `a >= 1`: `d = a - 1/3`, `c = 1 / sqrt(9 d)`, candidates `v = (1 + c x)^3` (x normal)
  accepted when `log u < x^2 / 2 + d - d v + d log v`; the draw is `d v`. For `a < 1` the draw for
  `a + 1` is multiplied by `u^(1/a)` (their boosting step). Instead of a loop, 16 candidates are drawn
  at once and the first accepted one is taken: each is accepted with probability > 0.95, so all 16
  are rejected with probability < 1e-20 (then the first candidate with v > 0 is used).
  """
  boosted = alpha if alpha >= 1 else alpha + 1.0
  d = boosted - 1.0 / 3.0
  c = 1.0 / (9.0 * d) ** 0.5
  normal_key, uniform_key, boost_key = tf.unstack(tf.random.experimental.stateless_split(key, 3, alg=_ALG))
  x = _normal(normal_key, [_CANDIDATES])
  u = 1.0 - _uniform(uniform_key, [_CANDIDATES])  # (0, 1]: log u is finite
  v = (1.0 + c * x) ** 3
  positive = v > 0
  log_v = tf.math.log(tf.where(positive, v, 1.0))
  accepted = tf.logical_and(positive, tf.math.log(u) < 0.5 * x * x + d - d * v + d * log_v)
  usable = tf.where(tf.reduce_any(accepted), accepted, positive)
  first = tf.minimum(tf.reduce_min(tf.where(usable, tf.range(_CANDIDATES), _CANDIDATES)), _CANDIDATES - 1)
  log_draw = tf.math.log(d) + tf.gather(log_v, first)  # a gather: XLA would specialize a slice to `first`
  if alpha < 1:
    log_draw += tf.math.log(1.0 - _uniform(boost_key, [])) / alpha
  return log_draw


def bernoulli(key: tf.Tensor, probability: float) -> tf.Tensor:
  """A boolean scalar, True with `probability` (exactly, for a multiple of 2^-24 such as 0.5 or 0.25)."""
  return _uniform(key, []) < probability


def _uniform(key: tf.Tensor, shape) -> tf.Tensor:
  """Uniform float32 draws in [0, 1) on the grid of multiples of 2^-24, from integer draws."""
  bits = tf.random.stateless_uniform(shape, seed=key, minval=0, maxval=_UNIT, dtype=tf.int32, alg=_ALG)
  return tf.cast(bits, tf.float32) / _UNIT


def _normal(key: tf.Tensor, shape) -> tf.Tensor:
  """Standard normal float32 draws by Box and Muller's transform of two `_uniform` draws (|x| < 5.8)."""
  radius_key, angle_key = tf.unstack(tf.random.experimental.stateless_split(key, 2, alg=_ALG))
  radius = tf.sqrt(-2.0 * tf.math.log(1.0 - _uniform(radius_key, shape)))
  return radius * tf.cos(2.0 * math.pi * _uniform(angle_key, shape))


def permutation(key: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """A uniformly random permutation of `range(size)` (int32): the stable argsort of 64-bit integer draws,
  sorted as pairs of 32-bit words, since TPUs have no native 64-bit sort.

  Philox's 64-bit draw i is its 32-bit draws (2i, 2i + 1), low word first. Sorting by the low word as
  unsigned (its sign bit flipped, then compared as signed), then stably by the high word as signed,
  orders the pairs exactly as their int64 values: the same permutation as sorting the 64-bit draws.
  """
  words = tf.random.stateless_uniform([size, 2], seed=key, minval=None, maxval=None, dtype=tf.int32, alg=_ALG)
  low_as_unsigned = tf.bitwise.bitwise_xor(words[:, 0], tf.constant(-2**31, tf.int32))
  by_low = tf.argsort(low_as_unsigned, stable=True)
  return tf.gather(by_low, tf.argsort(tf.gather(words[:, 1], by_low), stable=True))


def mixup(features: tf.Tensor, partners: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
  """`lam * x + (1 - lam) * x[partners]`, computed in float32 and cast back to the features' dtype."""
  x = tf.cast(features, tf.float32)
  return tf.cast(lam * x + (1.0 - lam) * tf.gather(x, partners), features.dtype)


def cutmix_box(lam: tf.Tensor, center_row: tf.Tensor, center_column: tf.Tensor, height: int,
               width: int) -> Box:
  """The reference CutMix box: side `floor(size * sqrt(1 - lam))`, centred, clipped to the image.

  As in the reference `rand_bbox`, the box spans `center -/+ cut // 2`, so an odd cut loses a row or
  column, and clipping at the border makes it smaller still; `cutmix` weights the labels by the area
  actually pasted. The sides are `cut_size`'s: the reference's float64 arithmetic, without float64.
  """
  def span(center, cut, size):
    return (tf.clip_by_value(center - cut // 2, 0, size), tf.clip_by_value(center + cut // 2, 0, size))

  top, bottom = span(tf.cast(center_row, tf.int32), cut_size(lam, height), height)
  left, right = span(tf.cast(center_column, tf.int32), cut_size(lam, width), width)
  return Box(top, bottom, left, right)


MAX_CUTMIX_SIDE = 2048  # `cut_size`'s exact test needs size^2 <= 2^22
_ONE_IN_FLOAT64 = 2.0**-54  # the largest lam for which float64 rounds 1 - lam to 1


def cut_size(lam: tf.Tensor, size: int) -> tf.Tensor:
  """`floor(size * sqrt(1 - lam))` (int32, any shape of float32 `lam` in [0, 1]) in float32 and int32 only,
  equal for every `lam` to the reference's float64 `int(size * np.sqrt(1 - lam))`.

  XLA:TPU has no float64, and float32 arithmetic alone changes boxes: `1 - lam` rounds to 1 for
  lam < 2^-25, which Beta(0.2, 0.2) draws about once in 60. The float32 estimate is within one of the
  answer, so the answer is the largest of (estimate - 1, estimate, estimate + 1) that `_fits`, an
  exact test. It agrees with float64 because float64's two roundings can move `size * sqrt(1 - lam)`
  across an integer only within about 2^-45 of it, and no float32 `lam` lands there (tests/test_mixing.py
  checks every float32 lam next to every integer crossing for sizes up to 256, and a million draws).
  """
  lam = tf.convert_to_tensor(lam, tf.float32)
  estimate = tf.cast(tf.floor(size * tf.sqrt(1.0 - lam)), tf.int32)
  return (estimate - 1 + tf.cast(_fits(estimate, lam, size), tf.int32)
          + tf.cast(_fits(estimate + 1, lam, size), tf.int32))


def _fits(cut: tf.Tensor, lam: tf.Tensor, size: int) -> tf.Tensor:
  """Whether `cut <= size * sqrt(1 - lam)` as float64 computes it, decided exactly in float32 and 32-bit ints.

  For `cut < size` that is `size^2 * lam <= size^2 - cut^2 = room`, an integer. The rounded float32
  product decides unless it equals `room`. Then, with `lam = m * 2^-s` (m the 24-bit significand), the
  sign of `size^2 * m - room * 2^s` decides: that difference is at most `size^2` in magnitude there
  (the product is within half an ulp of `room`), so it is exact modulo 2^32, in uint32 arithmetic, which
  wraps by definition and which no graph rewrite can reorder wrongly (a float32 Dekker product was
  reassociated by Grappler). `cut == size` fits only where float64 rounds `1 - lam` to 1.
  """
  if not 0 < size <= MAX_CUTMIX_SIDE:
    raise ValueError(f"CutMix boxes need image sides in [1, {MAX_CUTMIX_SIDE}], got {size}")
  area = size * size
  room = area - cut * cut  # below 2^22: exact in int32 and float32
  product = float(area) * lam
  bits = tf.bitcast(lam, tf.int32)
  biased_exponent = tf.bitwise.right_shift(bits, 23)
  normal = biased_exponent > 0
  fraction = tf.bitwise.bitwise_and(bits, 0x7FFFFF)
  significand = tf.where(normal, tf.bitwise.bitwise_or(fraction, 0x800000), bits)
  scale = tf.where(normal, 150 - biased_exponent, 149)  # lam = significand * 2^-scale
  room_scaled = tf.where(scale < 32, tf.bitwise.left_shift(tf.cast(room, tf.uint32),
                                                           tf.cast(tf.minimum(scale, 31), tf.uint32)), 0)
  difference = tf.bitcast(area * tf.cast(significand, tf.uint32) - room_scaled, tf.int32)
  room_float = tf.cast(room, tf.float32)
  below = tf.logical_or(product < room_float, tf.logical_and(product == room_float, difference <= 0))
  return tf.where(cut < size, below, tf.logical_and(cut == size, lam <= _ONE_IN_FLOAT64))


def cutmix(features: tf.Tensor, partners: tf.Tensor, box: Box) -> tuple[tf.Tensor, tf.Tensor]:
  """`x` with `box` replaced by `x[partners]`'s, and the kept area's fraction (the label weight lam).

  `features` are images `(batch, height, width)` or `(batch, height, width, channels)`.
  """
  height, width = features.shape[1], features.shape[2]
  rows, columns = tf.range(height), tf.range(width)
  in_rows = tf.logical_and(rows >= box.top, rows < box.bottom)
  in_columns = tf.logical_and(columns >= box.left, columns < box.right)
  inside = tf.logical_and(in_rows[:, None], in_columns[None, :])
  inside = tf.reshape(inside, [1, height, width] + [1] * (features.shape.rank - 3))
  mixed = tf.where(inside, tf.gather(features, partners), features)
  area = tf.cast((box.bottom - box.top) * (box.right - box.left), tf.float32)
  return mixed, 1.0 - area / float(height * width)


class BatchMixing(terms.BatchTransform):
  """A batch transform that mixes example pairs: the batch is a `Mixed`, scored by both labels.

  A subclass mixes with `_mix`; `prob` is the fraction of batches it applies to (the others get
  `lam = 1`, unchanged).
  """

  _SALT = 0  # separates the draws of different transforms with the same seed
  train_tags = ("train/mixing_lambda",)

  def __init__(self, *, prob: float, name: str):
    super().__init__(name=name, selector=None)
    self.prob = _probability(name, "prob", prob)

  def _hparams(self) -> dict:
    return {"alpha": self.alpha, "prob": self.prob}

  def loss(self, loss_fn, labels: tf.Tensor, outputs: tf.Tensor, batch: Mixed) -> tf.Tensor:
    return mixed_loss(loss_fn, labels, outputs, batch)

  def correct(self, correct_fn, labels: tf.Tensor, outputs: tf.Tensor, batch: Mixed) -> tf.Tensor:
    """Each label credited by its weight in the mixture (as the Mixup reference does)."""
    return batch.lam * correct_fn(labels, outputs) + (1.0 - batch.lam) * correct_fn(batch.partner_labels,
                                                                                    outputs)

  def record(self, metrics, batch: Mixed) -> None:
    metrics["train/mixing_lambda"].update(batch.lam, 1.0)

  def describe(self) -> str:
    return (f"{self.name}: {type(self).__name__}({self._settings()}), mixes each replica's batch with its "
            "own draw per step (stateless in seed, step, replica)")

  def _settings(self) -> str:
    return f"alpha={self.alpha:g}" + (f", prob={self.prob:g}" if self.prob < 1 else "")

  def __call__(self, features: tf.Tensor, labels: tf.Tensor, *, seed: int, step: tf.Tensor,
               replica: tf.Tensor) -> Mixed:
    """This replica's batch mixed with the draw of (seed, step, replica)."""
    key = step_key(seed, self._SALT, step, replica)
    lam_key, permutation_key, extra_key = tf.unstack(tf.random.experimental.stateless_split(key, 3, alg=_ALG))
    apply_key, switch_key = tf.unstack(tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(key, _DECISIONS, alg=_ALG), 2, alg=_ALG))
    partners = permutation(permutation_key, tf.shape(labels)[0])
    features, lam = self._mix(features, partners, _Draws(lam_key, extra_key, apply_key, switch_key))
    return Mixed(features, tf.gather(labels, partners), lam)

  def _lam(self, key: tf.Tensor, apply_key: tf.Tensor, alpha: float) -> tf.Tensor:
    """`Beta(alpha, alpha)`, or 1 (no mixing) for the batches that `prob` leaves out."""
    lam = beta(key, alpha)
    return lam if self.prob == 1.0 else tf.where(bernoulli(apply_key, self.prob), lam, 1.0)

  def _mix(self, features, partners, draws: _Draws) -> tuple[tf.Tensor, tf.Tensor]:
    raise NotImplementedError


class _Draws(typing.NamedTuple):
  """The keys of one step's draws: lam, CutMix's box centre, and the per-batch apply and switch choices."""
  lam: tf.Tensor
  box: tf.Tensor
  apply: tf.Tensor
  switch: tf.Tensor


@gin.configurable
class Mixup(BatchMixing):
  """Mixup (Zhang et al. 2018): `lam * x_i + (1 - lam) * x_j` with `lam ~ Beta(alpha, alpha)` per batch.

  Args:
    alpha: the Beta distribution's parameter (> 0); the paper uses 0.2 on ImageNet and 1 on CIFAR.
    prob: the probability that a batch is mixed at all (in [0, 1]; default 1, every batch).
    name: the term's name in logs and HParams (`reg/<name>/alpha`, `reg/<name>/prob`).
  """

  _SALT = 1

  def __init__(self, alpha: float, *, prob: float = 1.0, name: str = "mixup"):
    super().__init__(prob=prob, name=name)
    self.alpha = checks.positive(name, "alpha", alpha)

  def _mix(self, features, partners, draws):
    lam = self._lam(draws.lam, draws.apply, self.alpha)
    return mixup(features, partners, lam), lam


@gin.configurable
class CutMix(BatchMixing):
  """CutMix (Yun et al. 2019): a box of `x_j` pasted into `x_i`, labels weighted by the kept area.

  Needs image features, `(batch, height, width[, channels])`.

  Args:
    alpha: the Beta distribution's parameter (> 0) of the box's area fraction; the paper uses 1.
    prob: the probability that a batch is mixed at all (in [0, 1]; default 1): the paper's
      `cutmix_prob`, 0.5 in its CIFAR recipe, 1 on ImageNet.
    name: the term's name in logs and HParams (`reg/<name>/alpha`, `reg/<name>/prob`).
  """

  _SALT = 2

  def __init__(self, alpha: float, *, prob: float = 1.0, name: str = "cutmix"):
    super().__init__(prob=prob, name=name)
    self.alpha = checks.positive(name, "alpha", alpha)

  def _mix(self, features, partners, draws):
    lam = self._lam(draws.lam, draws.apply, self.alpha)
    return _cutmix_with_drawn_box(self.name, features, partners, lam, draws.box)


@gin.configurable
class MixupCutMix(BatchMixing):
  """Mixup or CutMix, chosen per batch: timm's `Mixup(mixup_alpha, cutmix_alpha, prob, switch_prob)`.

  Each batch is mixed with probability `prob`; a mixed batch uses CutMix (`lam ~ Beta(cutmix_alpha)`,
  corrected to the kept area) with probability `switch_prob` and Mixup (`lam ~ Beta(mixup_alpha)`)
  otherwise. DeiT: `mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5` with
  `softmax_cross_entropy.label_smoothing = 0.1`, which is timm's `label_smoothing=0.1` folded into
  the mixed targets (the module docstring says why). Needs image features, as CutMix does.

  Args:
    mixup_alpha, cutmix_alpha: the Beta parameters (> 0) of the two transforms.
    prob: the probability that a batch is mixed at all (in [0, 1]).
    switch_prob: the probability that a mixed batch uses CutMix rather than Mixup (in [0, 1]).
    name: the term's name in logs and HParams (`reg/<name>/mixup_alpha`, ...).
  """

  _SALT = 3

  def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, *, prob: float = 1.0,
               switch_prob: float = 0.5, name: str = "mixup_cutmix"):
    super().__init__(prob=prob, name=name)
    self.mixup_alpha = checks.positive(name, "mixup_alpha", mixup_alpha)
    self.cutmix_alpha = checks.positive(name, "cutmix_alpha", cutmix_alpha)
    self.switch_prob = _probability(name, "switch_prob", switch_prob)

  def _settings(self) -> str:
    return (f"mixup_alpha={self.mixup_alpha:g}, cutmix_alpha={self.cutmix_alpha:g}, prob={self.prob:g}, "
            f"switch_prob={self.switch_prob:g}")

  def _hparams(self) -> dict:
    return {"mixup_alpha": self.mixup_alpha, "cutmix_alpha": self.cutmix_alpha, "prob": self.prob,
            "switch_prob": self.switch_prob}

  def _mix(self, features, partners, draws):
    lam_keys = tf.unstack(tf.random.experimental.stateless_split(draws.lam, 2, alg=_ALG))
    use_cutmix = bernoulli(draws.switch, self.switch_prob)
    mixup_lam = self._lam(lam_keys[0], draws.apply, self.mixup_alpha)
    cutmix_lam = self._lam(lam_keys[1], draws.apply, self.cutmix_alpha)
    _check_images(self.name, features)
    return tf.cond(use_cutmix,
                   lambda: _cutmix_with_drawn_box(self.name, features, partners, cutmix_lam, draws.box),
                   lambda: (mixup(features, partners, mixup_lam), mixup_lam))


def _check_images(name: str, features: tf.Tensor) -> None:
  if features.shape.rank not in (3, 4) or None in features.shape[1:3]:
    raise ValueError(f"{name}: CutMix needs image features (batch, height, width[, channels]) with "
                     f"known height and width, got shape {features.shape}")


def _cutmix_with_drawn_box(name: str, features, partners, lam, key) -> tuple[tf.Tensor, tf.Tensor]:
  """CutMix with area fraction `1 - lam` and the box centre drawn uniformly from `key`."""
  _check_images(name, features)
  height, width = features.shape[1], features.shape[2]
  row_key, column_key = tf.unstack(tf.random.experimental.stateless_split(key, 2, alg=_ALG))
  center_row = tf.random.stateless_uniform([], seed=row_key, maxval=height, dtype=tf.int32, alg=_ALG)
  center_column = tf.random.stateless_uniform([], seed=column_key, maxval=width, dtype=tf.int32, alg=_ALG)
  return cutmix(features, partners, cutmix_box(lam, center_row, center_column, height, width))


def _probability(name: str, argument: str, value: float) -> float:
  value = float(value)
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name}: {argument} must be in [0, 1], got {value}")
  return value
