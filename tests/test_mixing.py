"""Mixup and CutMix against numpy references for fixed draws, their stateless draws, and where they mix.

References: the mixed batch is recomputed with numpy (`lam * x + (1 - lam) * x[perm]`; CutMix's box by
the reference `rand_bbox` arithmetic and a slice assignment), and the mixed loss is Keras'
`CategoricalCrossentropy` on the mixed soft labels.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tests.conftest import mirrored
from trainer.loop import losses
from trainer.regularization import mixing

RNG = np.random.default_rng(0)
IMAGES = RNG.random((6, 8, 8, 1)).astype(np.float32)
LABELS = RNG.integers(0, 10, size=6).astype(np.int32)
PARTNERS = np.array([3, 0, 5, 1, 2, 4], np.int32)


def test_mixup_batch_equals_numpy_for_a_fixed_draw():
  got = mixing.mixup(tf.constant(IMAGES), tf.constant(PARTNERS), tf.constant(0.3))
  np.testing.assert_allclose(got.numpy(), 0.3 * IMAGES + 0.7 * IMAGES[PARTNERS], atol=1e-7, rtol=0)


def _reference_box(lam: float, center_row: int, center_column: int, height: int, width: int):
  """CutMix's reference `rand_bbox` arithmetic (Yun et al. 2019, official code), in numpy."""
  ratio = np.sqrt(1.0 - lam)
  cut_rows, cut_columns = int(height * ratio), int(width * ratio)
  top, bottom = np.clip([center_row - cut_rows // 2, center_row + cut_rows // 2], 0, height)
  left, right = np.clip([center_column - cut_columns // 2, center_column + cut_columns // 2], 0, width)
  return int(top), int(bottom), int(left), int(right)


@pytest.mark.parametrize("lam, center_row, center_column", [
    (0.3, 4, 4), (0.7, 0, 7), (0.05, 6, 1), (0.999, 3, 3), (0.0, 7, 0)])
def test_cutmix_box_batch_and_lam_equal_the_reference(lam, center_row, center_column):
  box = mixing.cutmix_box(tf.constant(lam), tf.constant(center_row), tf.constant(center_column), 8, 8)
  top, bottom, left, right = _reference_box(lam, center_row, center_column, 8, 8)
  assert [int(v) for v in box] == [top, bottom, left, right]
  got, kept = mixing.cutmix(tf.constant(IMAGES), tf.constant(PARTNERS), box)
  expected = IMAGES.copy()
  expected[:, top:bottom, left:right] = IMAGES[PARTNERS][:, top:bottom, left:right]
  np.testing.assert_array_equal(got.numpy(), expected)
  assert float(kept) == pytest.approx(1 - (bottom - top) * (right - left) / 64, abs=1e-7)


def _float64_cuts(lam: np.ndarray, size: int) -> np.ndarray:
  """The reference's side, `int(size * np.sqrt(1 - lam))`, in float64 as it computes it."""
  return np.floor(size * np.sqrt(1.0 - lam.astype(np.float64))).astype(np.int64)


SIDES = [*range(1, 65), 96, 112, 128, 160, 192, 224, 256, 384, 512, 1024, 2048]
XLA_SIDES = [5, 8, 32, 224]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_cut_size_in_float32_equals_the_float64_reference_for_every_lam_next_to_a_crossing(jit_compile):
  """Where float64's roundings could move `size * sqrt(1 - lam)` across an integer: every float32 lam
  within 16 ulps of each crossing `1 - (k / size)^2` (the only places a rounding error can matter), for
  every side up to 64 and common larger ones, and lams down to 2^-149 (where float32's `1 - lam` is 1)."""
  lams = {}
  for size in SIDES if not jit_compile else XLA_SIDES:  # XLA compiles each side's ops apart: a few
    crossings = (1.0 - (np.arange(size + 1) / size) ** 2).astype(np.float32)
    near = (crossings.view(np.int32)[:, None] + np.arange(-16, 17, dtype=np.int32)).view(np.float32).ravel()
    tiny = (2.0 ** -np.arange(0, 150, 0.25)).astype(np.float32)
    lam = np.concatenate([near, tiny, [0.0, 2.0**-54, np.nextafter(np.float32(2.0**-54), np.float32(1))]])
    lams[size] = tf.constant(lam[(lam >= 0) & (lam <= 1)].astype(np.float32))

  def cuts(lams):
    return {size: mixing.cut_size(lam, size) for size, lam in lams.items()}
  got = tf.function(cuts, jit_compile=True)(lams) if jit_compile else cuts(lams)
  for size, lam in lams.items():
    np.testing.assert_array_equal(got[size].numpy(), _float64_cuts(lam.numpy(), size), err_msg=str(size))


def test_cut_size_in_float32_equals_the_float64_reference_for_a_million_beta_draws():
  """A million Beta(0.2, 0.2) lams (claim 9's smallest alpha: many next to 0, where a plain float32
  computation changes about 1 box in 60) and Beta(1, 1) ones, at the sides of digits, CIFAR and ImageNet."""
  lam = np.concatenate([RNG.beta(0.2, 0.2, 500_000), RNG.beta(1.0, 1.0, 500_000)]).astype(np.float32)
  plain_float32_changes = 0
  for size in (8, 32, 224):
    expected = _float64_cuts(lam, size)
    np.testing.assert_array_equal(mixing.cut_size(tf.constant(lam), size).numpy(), expected)
    plain_float32_changes += int(np.sum(np.floor(size * np.sqrt(1 - lam)) != expected))
  assert plain_float32_changes > 1000  # the draws reach where float32 alone goes wrong


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixed_loss_is_keras_cross_entropy_on_the_mixed_soft_labels(smoothing):
  logits = RNG.normal(size=(6, 10)).astype(np.float32)
  mixed = mixing.Mixed(tf.constant(IMAGES), tf.constant(LABELS[PARTNERS]), tf.constant(0.3))
  loss_fn = functools.partial(losses.softmax_cross_entropy, label_smoothing=smoothing)
  got = mixing.mixed_loss(loss_fn, tf.constant(LABELS), tf.constant(logits), mixed)
  soft = 0.3 * np.eye(10)[LABELS] + 0.7 * np.eye(10)[LABELS[PARTNERS]]
  keras = tf.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing,
                                                  reduction="none")
  np.testing.assert_allclose(got.numpy(), keras(soft, logits).numpy(), rtol=1e-5)


def test_draws_depend_on_seed_step_and_replica_only():
  term = mixing.Mixup(0.4)
  features, labels = tf.constant(IMAGES), tf.constant(LABELS)

  def draw(seed, step, replica):
    mixed = term(features, labels, seed=seed, step=tf.constant(step, tf.int64), replica=tf.constant(replica))
    return float(mixed.lam), mixed.partner_labels.numpy().tolist()

  first = draw(7, 11, 0)
  assert draw(7, 11, 0) == first  # no state: the same draw again
  assert all(draw(*other) != first for other in [(8, 11, 0), (7, 12, 0), (7, 11, 1)])
  cutmix = mixing.CutMix(0.4)(features, labels, seed=7, step=tf.constant(11, tf.int64),
                              replica=tf.constant(0))
  assert float(cutmix.lam) != first[0]  # each transform has its own stream


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])  # both branches of the sampler (alpha < 1, >= 1)
def test_gamma_draws_follow_gamma_alpha(alpha):
  """2,000 consecutive steps' Gamma(alpha) draws against scipy's CDF (Kolmogorov-Smirnov). Beta draws
  are `sigmoid(log g1 - log g2)` of two of them. (A KS test of lam itself would mostly see float32's
  rounding of lam near 1, which numpy's own Beta draws cast to float32 fail as well.) That the draws
  compile with XLA is tested with the whole step (tests/test_distribution.py)."""
  @tf.function
  def draws():
    return tf.map_fn(lambda step: mixing.log_gamma(mixing.step_key(0, 1, step, 0), alpha),
                     tf.range(2000, dtype=tf.int64), fn_output_signature=tf.float32)
  gammas = np.exp(draws().numpy().astype(np.float64))
  assert scipy.stats.kstest(gammas, scipy.stats.gamma(alpha).cdf).pvalue > 0.01
  lam = mixing.beta(mixing.step_key(0, 1, tf.constant(0, tf.int64), 0), alpha)
  assert 0.0 <= float(lam) <= 1.0


def test_two_replicas_mix_their_own_batch_with_their_own_draw():
  """The documented choice: within each replica's batch. Replica r's result is the single-device
  transform of its own half with the draw of (seed, step, r); no example crosses replicas."""
  strategy, term, step = mirrored(2), mixing.Mixup(1.0), tf.constant(5, tf.int64)
  images, labels = IMAGES.reshape(6, -1)[:4], LABELS[:4]

  def replica_fn(features, labels):
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tuple(term(features, labels, seed=3, step=step, replica=replica))

  dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
  batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
  results = strategy.run(tf.function(replica_fn), args=batch)
  per_replica = [[t.numpy() for t in parts] for parts in zip(*[strategy.experimental_local_results(r)
                                                                for r in results])]
  for replica, (features, partner_labels, lam) in enumerate(per_replica):
    shard = slice(2 * replica, 2 * replica + 2)
    expected = term(tf.constant(images[shard]), tf.constant(labels[shard]), seed=3, step=step,
                    replica=tf.constant(replica))
    # Eager against tf.function: the same draw, mixing arithmetic within float32 rounding.
    np.testing.assert_allclose(features, expected.features.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(partner_labels, expected.partner_labels.numpy())
    assert lam == pytest.approx(float(expected.lam), abs=1e-6)
  assert per_replica[0][2] != per_replica[1][2]


def test_cutmix_refuses_features_that_are_not_images():
  with pytest.raises(ValueError, match="cutmix: CutMix needs image features"):
    mixing.CutMix(1.0)(tf.zeros((4, 64)), tf.zeros((4,), tf.int32), seed=0, step=tf.constant(0, tf.int64),
                       replica=tf.constant(0))


@pytest.mark.parametrize("term, message", [(lambda: mixing.Mixup(0.0), "mixup: alpha must be > 0"),
                                           (lambda: mixing.CutMix(-1.0), "cutmix: alpha must be")])
def test_bad_alpha_is_refused_naming_the_term(term, message):
  with pytest.raises(ValueError, match=message):
    term()


# ----- as the recipes use them: application probability and timm's per-batch switch ------------------

STEPS = 2000
SIDE = 64  # CutMix's box is empty (nothing pasted, lam = 1) only if floor(64 sqrt(1 - lam)) < 2


def _outcomes(term: mixing.BatchMixing, batch: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """For STEPS consecutive steps: lam, whether the batch came back unchanged, and whether every pixel is
  its own or its partner's (a paste, not a blend). Images hold distinct values, so a blend shows; with 16
  examples the permutation is the identity (nothing changes) with probability 1 / 16!."""
  images = tf.reshape(tf.range(batch * SIDE * SIDE, dtype=tf.float32), (batch, SIDE, SIDE, 1)) / 1e5 + 0.25
  labels = tf.range(batch)  # partner labels are the partners

  @tf.function
  def outcomes():
    def one(step):
      mixed = term(images, labels, seed=5, step=step, replica=tf.constant(0))
      partner_images = tf.gather(images, mixed.partner_labels)
      own = mixed.features == images
      return (mixed.lam, tf.reduce_all(own),
              tf.reduce_all(tf.logical_or(own, mixed.features == partner_images)))
    return tf.map_fn(one, tf.range(STEPS, dtype=tf.int64),
                     fn_output_signature=(tf.float32, tf.bool, tf.bool))
  return tuple(t.numpy() for t in outcomes())


def _assert_rate(hits: np.ndarray, probability: float) -> None:
  """The frequency of `hits` within 4 binomial standard deviations of `probability`."""
  sigma = np.sqrt(probability * (1 - probability) / len(hits))
  assert abs(hits.mean() - probability) <= 4 * sigma + 1e-12, (hits.mean(), probability, sigma)


@pytest.mark.parametrize("make, pastes", [(lambda: mixing.Mixup(1.0, prob=0.3), False),
                                          (lambda: mixing.CutMix(1.0, prob=0.5), True)],
                         ids=["Mixup", "CutMix"])
def test_prob_mixes_that_fraction_of_batches_and_leaves_the_others_unchanged(make, pastes):
  """Over 2,000 steps the mixed fraction is within 4 standard deviations of `prob` (less CutMix's empty
  boxes, P = 1/1024 under Beta(1, 1)); an unmixed batch is the input bit for bit with lam exactly 1."""
  term = make()
  lam, unchanged, pasted = _outcomes(term)
  empty_box = 1 / 1024 if pastes else 0.0
  _assert_rate(lam < 1, term.prob * (1 - empty_box))
  assert np.array_equal(unchanged, lam == 1)  # (the identity permutation, 1 / 16!, would break this)
  if pastes:
    assert pasted.all()


def test_mixup_cutmix_switches_per_batch_with_the_stated_probabilities():
  """timm's `Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.8, switch_prob=0.25)`: per batch, no mixing
  with probability 0.2, CutMix (a paste) 0.8 * 0.25, Mixup (a blend) 0.8 * 0.75, each within 4 standard
  deviations over 2,000 steps; the Mixup batches' lams follow Beta(0.8, 0.8) (Kolmogorov-Smirnov,
  p > 0.001; the draws are fixed by the seed, so the test is deterministic)."""
  term = mixing.MixupCutMix(0.8, 1.0, prob=0.8, switch_prob=0.25)
  lam, unchanged, pasted = _outcomes(term)
  cut, blended = pasted & (lam < 1), ~pasted
  _assert_rate(cut, 0.8 * 0.25 * (1 - 1 / 1024))
  _assert_rate(blended, 0.8 * 0.75)
  _assert_rate(unchanged, 0.2 + 0.8 * 0.25 / 1024)
  assert np.array_equal(unchanged, lam == 1) and not (blended & unchanged).any()
  assert scipy.stats.kstest(lam[blended].astype(np.float64), scipy.stats.beta(0.8, 0.8).cdf).pvalue > 1e-3


def _timm_mixup_target(labels: np.ndarray, partner_labels: np.ndarray, lam: float, smoothing: float,
                       classes: int) -> np.ndarray:
  """timm's `mixup_target`: smoothed one-hots (off = s / K, on = 1 - s + off), `lam * y1 + (1 - lam) * y2`."""
  off = smoothing / classes
  def smoothed(y):
    return np.full((len(y), classes), off) + (1 - smoothing) * np.eye(classes)[y]
  return lam * smoothed(labels) + (1 - lam) * smoothed(partner_labels)


def test_mixup_cutmix_loss_with_label_smoothing_is_cross_entropy_on_timms_mixed_targets():
  """DeiT's targets: the per-example loss of `MixupCutMix` with `label_smoothing=0.1` equals the cross
  entropy (numpy, float64) on timm's `mixup_target` for the same lam and partners, relative 1e-5, on
  mixed and unmixed batches (prob 0.5) alike."""
  term = mixing.MixupCutMix(0.8, 1.0, prob=0.5)
  loss_fn = functools.partial(losses.softmax_cross_entropy, label_smoothing=0.1)
  images, lams = tf.constant(RNG.random((6, 8, 8, 3)).astype(np.float32)), set()
  for step in range(8):
    mixed = term(images, tf.constant(LABELS), seed=1, step=tf.constant(step, tf.int64),
                 replica=tf.constant(0))
    logits = RNG.normal(size=(6, 10))
    got = mixing.mixed_loss(loss_fn, tf.constant(LABELS), tf.constant(logits, tf.float32), mixed).numpy()
    target = _timm_mixup_target(LABELS, mixed.partner_labels.numpy(), float(mixed.lam), 0.1, 10)
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    np.testing.assert_allclose(got, -(target * log_softmax).sum(1), rtol=1e-5)
    lams.add(float(mixed.lam) == 1.0)
  assert lams == {True, False}  # both kinds of batch were seen


@pytest.mark.slow  # XLA compilation of the two branches, ~40 s on a busy machine
def test_mixup_cutmix_draws_the_same_with_and_without_xla():
  """The switch, the apply choice, the pairs and the box are integer draws: XLA makes the same ones
  (features within float32 rounding of the blend, lam within 1e-6)."""
  term = mixing.MixupCutMix(0.8, 1.0, prob=0.7)
  images = tf.constant(RNG.random((6, 8, 8, 3)).astype(np.float32))

  def draw(step):
    return tuple(term(images, tf.constant(LABELS), seed=2, step=step, replica=tf.constant(1)))

  graph, xla = tf.function(draw), tf.function(draw, jit_compile=True)
  for step in range(4):
    step = tf.constant(step, tf.int64)
    (features, partners, lam), (xla_features, xla_partners, xla_lam) = graph(step), xla(step)
    np.testing.assert_array_equal(partners.numpy(), xla_partners.numpy())
    np.testing.assert_allclose(features.numpy(), xla_features.numpy(), atol=1e-6, rtol=0)
    assert float(lam) == pytest.approx(float(xla_lam), abs=1e-6)


@pytest.mark.parametrize("term, message", [
    (lambda: mixing.Mixup(1.0, prob=1.5), "mixup: prob must be in \\[0, 1\\], got 1.5"),
    (lambda: mixing.MixupCutMix(switch_prob=-0.1), "mixup_cutmix: switch_prob must be in"),
    (lambda: mixing.MixupCutMix(cutmix_alpha=0.0), "mixup_cutmix: cutmix_alpha must be > 0")])
def test_bad_probabilities_are_refused_naming_the_term(term, message):
  with pytest.raises(ValueError, match=message):
    term()


def test_the_permutation_is_the_stable_argsort_of_the_64_bit_draws_without_a_64_bit_sort():
  """Sorted as two 32-bit words (TPUs have no int64 sort), the order is numpy's argsort of the int64 draws
  that Philox makes from the same key; XLA gives the same; the graph holds no 64-bit sort."""
  compiled = tf.function(mixing.permutation, jit_compile=True)
  for seed in range(40):
    key = tf.constant([seed, 7], tf.int64)
    for size in (1, 2, 16, 257):
      draws = tf.random.stateless_uniform([size], seed=key, minval=None, maxval=None, dtype=tf.int64,
                                          alg="philox").numpy()
      expected = np.argsort(draws, kind="stable")
      np.testing.assert_array_equal(mixing.permutation(key, tf.constant(size)).numpy(), expected)
      if seed < 3:
        np.testing.assert_array_equal(compiled(key, tf.constant(size)).numpy(), expected)
  graph = tf.function(mixing.permutation).get_concrete_function(
      tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.int32)).graph
  sorts = [op for op in graph.get_operations() if op.type in ("TopKV2", "TopK")]
  assert sorts and all(op.get_attr("T") == tf.int32 for op in sorts)
