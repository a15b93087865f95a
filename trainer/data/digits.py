"""The UCI 8x8 handwritten digits, shipped with the package: a real dataset, offline, in seconds.

1,797 grey-scale 8x8 images of the digits 0-9 (about 180 per class), stored in `digits.npz` next to
this module (see `DIGITS_LICENSE.txt`; built by `scripts/make_digits.py`). It is small enough for a
test or a laptop sweep, yet real enough that regularizers and label noise change test accuracy.
"""

from __future__ import annotations

import importlib.resources

import gin
import numpy as np

from trainer.data.arrays import ArrayData, check_fraction, corrupt_labels
from trainer.data.splits import Splits, describe

NUM_CLASSES = 10
MAX_PIXEL = 16  # Each pixel counts the "on" pixels in a 4x4 block of the original 32x32 bitmap.
_SOURCE = "UCI optdigits 8x8 (Alpaydin & Kaynak, CC BY 4.0) via scikit-learn"


def load_raw() -> tuple[np.ndarray, np.ndarray]:
  """The stored images, uint8 (1797, 8, 8) in 0..16, and labels, uint8 (1797,) in 0..9.

  Read through `importlib.resources`, so it works from a source tree, an editable install or a
  wheel alike (the wheel must list `digits.npz` as package data).
  """
  resource = importlib.resources.files(__package__).joinpath("digits.npz")
  with resource.open("rb") as file, np.load(file) as archive:
    return archive["images"], archive["labels"]


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A random permutation of the examples in which every prefix is (nearly) class-stratified.

  Examples are shuffled, then each is keyed by its position within its own class as a fraction of
  the class size, and sorted by that key. Any prefix of length k then holds each class in
  proportion to its size, to within one example. Cutting test, validation and train off the front
  therefore stratifies all three, and so does taking the first `num_train` training examples.
  """
  permutation = rng.permutation(len(labels))
  key = np.empty(len(labels))
  for label in np.unique(labels):
    members = permutation[labels[permutation] == label]
    key[members] = (np.arange(len(members)) + 0.5) / len(members)
  return permutation[np.argsort(key[permutation], kind="stable")]


def _check_sizes(total: int, validation_size: int, test_size: int, num_train: int | None) -> None:
  """Raises a ValueError naming the argument when the requested split sizes cannot be met."""
  for name, size in (("validation_size", validation_size), ("test_size", test_size)):
    if size < 1:
      raise ValueError(f"{name} must be at least 1, got {size}")
  available = total - validation_size - test_size
  if available < 1:
    raise ValueError(f"validation_size + test_size = {validation_size + test_size} leaves no "
                     f"training examples out of {total}")
  if num_train is not None and not 1 <= num_train <= available:
    raise ValueError(f"num_train must be in [1, {available}] (the examples left after "
                     f"validation and test), got {num_train}")


def _to_split(images: np.ndarray, labels: np.ndarray) -> ArrayData:
  """uint8 images (n, 8, 8) -> float32 features (n, 8, 8, 1) in [0, 1]; labels -> int32."""
  features = images[..., np.newaxis].astype(np.float32) / MAX_PIXEL
  return ArrayData(features=features, labels=labels.astype(np.int32))


@gin.configurable
def digits(*, validation_size: int = 180, test_size: int = 360, num_train: int | None = None,
           label_noise: float = 0.0, split_seed: int = 0, noise_seed: int = 1) -> Splits:
  """The digits as stratified train / validation / test splits, optionally with noisy train labels.

  Args:
    validation_size: number of validation examples (default 180, 10%).
    test_size: number of test examples (default 360, 20%).
    num_train: use only the first `num_train` of the remaining training examples (default: all of
      them, 1,257 with the default sizes). Subsets stay stratified and are nested: a smaller
      `num_train` with the same `split_seed` is a prefix of a larger one, which makes
      sample-size sweeps comparable.
    label_noise: fraction in [0, 1] of the training labels to make wrong. Exactly
      round(label_noise * num_train) examples, chosen by `noise_seed`, get a label drawn uniformly
      from the 9 OTHER classes, so `label_noise` is exactly the fraction of wrong training labels
      (not the fraction resampled, some of which would land on the true class). Validation and
      test labels are always clean.
    split_seed: seed of the split; the same seed always gives the same three splits.
    noise_seed: seed choosing which labels are corrupted and to what, independent of the split.

  Returns:
    Splits with float32 features (N, 8, 8, 1) scaled to [0, 1] and int32 labels in 0..9.
  """
  label_noise = check_fraction("label_noise", label_noise)
  images, labels = load_raw()
  _check_sizes(len(labels), validation_size, test_size, num_train)
  order = stratified_order(labels, np.random.default_rng(split_seed))
  test_index, validation_index, train_index = np.split(
      order, [test_size, test_size + validation_size])
  train_index = train_index[:num_train]
  train_labels = corrupt_labels(labels[train_index].astype(np.int32), label_noise, NUM_CLASSES,
                                np.random.default_rng(noise_seed))
  train = _to_split(images[train_index], train_labels)
  validation = _to_split(images[validation_index], labels[validation_index])
  test = _to_split(images[test_index], labels[test_index])
  num_noisy = int(np.sum(train_labels != labels[train_index]))
  return Splits(name="digits", train=train, validation=validation, test=test,
                num_classes=NUM_CLASSES,
                description=describe("digits", train, validation, test, num_noisy, _SOURCE),
                label_noise=label_noise)
