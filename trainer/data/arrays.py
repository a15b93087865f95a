"""Array datasets: the split container most loaders return, the `Splits` triple, and label noise.

An `ArrayData` split is a pair of numpy arrays: held in RAM, or memory-mapped from a `.npy` file
(`np.load(path, mmap_mode='r')`), in which case the input pipeline reads only the examples of each
batch and memory stays flat in the dataset's size. Images are best kept as uint8 (a quarter of
float32); the pipeline converts them on the fly. Splits of other kinds (random access through a
TFDS data source, sequential TFRecord shards) live in `trainer.data.sources`; `Splits` holds any.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayData:
  """One split in memory.

  Attributes:
    features: float32 array of shape (N, ...), or uint8 images (N, height, width, channels) that the
      pipeline scales to [0, 1]; either may be a read-only `np.memmap`.
    labels: int32 class ids of shape (N,), or float32 regression targets of shape (N, ...).

  The dtypes are checked rather than converted, so that a float64 array or int64 labels coming from
  a loader are caught where they are made instead of silently doubling memory or changing a loss.
  """

  features: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    features, labels = self.features, self.labels
    if not isinstance(features, np.ndarray) or not isinstance(labels, np.ndarray):
      raise TypeError("ArrayData wants numpy arrays, got "
                      f"features={type(features).__name__}, labels={type(labels).__name__}")
    if features.dtype not in (np.float32, np.uint8):
      raise ValueError(f"features must be float32 or uint8 (images), got {features.dtype}")
    if labels.dtype == np.int32:
      if labels.ndim != 1:
        raise ValueError(f"int32 class labels must have shape (N,), got {labels.shape}")
    elif labels.dtype != np.float32:
      raise ValueError(f"labels must be int32 class ids or float32 targets, got {labels.dtype}")
    if features.ndim == 0 or labels.ndim == 0:
      raise ValueError("features and labels need a leading example dimension")
    if len(features) != len(labels):
      raise ValueError(f"features have {len(features)} examples but labels have {len(labels)}")
    if len(features) == 0:
      raise ValueError("a split needs at least one example")
    if features.dtype == np.float32 and not self.memory_mapped and not np.all(np.isfinite(features)):
      raise ValueError("features contain NaN or infinite values")

  @property
  def num_examples(self) -> int:
    """N, the number of examples."""
    return len(self.features)

  @property
  def known_size(self) -> int:
    """N (the same as `num_examples`; streamed splits may not know theirs without reading)."""
    return len(self.features)

  @property
  def example_shape(self) -> tuple[int, ...]:
    """The shape of one example's features."""
    return tuple(self.features.shape[1:])

  @property
  def features_dtype(self) -> np.dtype:
    return self.features.dtype

  @property
  def labels_dtype(self) -> np.dtype:
    return self.labels.dtype

  @property
  def label_shape(self) -> tuple[int, ...]:
    return tuple(self.labels.shape[1:])

  @property
  def memory_mapped(self) -> bool:
    """Whether the features stay on disk (read per batch) rather than in RAM."""
    return isinstance(self.features, np.memmap)


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
  """A dataset as train / validation / test splits, plus what a model and a log need to know.

  Attributes:
    name: short dataset name, e.g. `digits`.
    train, validation, test: the three splits, each an `ArrayData` or a split of
      `trainer.data.sources` (`IndexedData`, `RecordData`); they share the per-example feature
      shape and dtype and the label kind.
    num_classes: number of classes for classification (labels are int32 in [0, num_classes)), or
      None for regression (labels are float32 targets).
    description: one line for the log: split sizes, the label noise actually applied, the source.
  """

  name: str
  train: ArrayData
  validation: ArrayData
  test: ArrayData
  num_classes: int | None
  description: str

  def __post_init__(self):
    if "\n" in self.description:
      raise ValueError("description must be a single line")
    for split_name, split in self.named_splits():
      _check_compatible(split_name, split, self.train, self.num_classes)

  def named_splits(self) -> tuple[tuple[str, ArrayData], ...]:
    """(name, split) pairs in the order train, validation, test."""
    return (("train", self.train), ("validation", self.validation), ("test", self.test))


def _check_compatible(split_name: str, split, train, num_classes: int | None) -> None:
  """Checks that a split matches the train split's example shape and dtype and the label kind.

  `split` and `train` are any split kind (`ArrayData` or one of `trainer.data.sources`); the label
  range is checked where the labels are at hand (arrays), and by the pipeline's probe otherwise.
  """
  if split.example_shape != train.example_shape or split.features_dtype != train.features_dtype:
    raise ValueError(f"{split_name} features are {split.features_dtype.name}{list(split.example_shape)} "
                     f"per example, train has {train.features_dtype.name}{list(train.example_shape)}")
  if split.labels_dtype != (np.int32 if num_classes is not None else np.float32):
    kind = "classification wants int32" if num_classes is not None else \
        "regression (num_classes=None) wants float32"
    raise ValueError(f"{kind} {split_name} labels, got {split.labels_dtype.name}")
  if num_classes is None or not isinstance(split, ArrayData):
    return
  low, high = split.labels.min(), split.labels.max()
  if low < 0 or high >= num_classes:
    raise ValueError(f"{split_name} labels span [{low}, {high}], outside [0, {num_classes})")


def check_fraction(name: str, value: float) -> float:
  """Returns `value` if it lies in [0, 1]; otherwise raises a ValueError naming the argument."""
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value}")
  return float(value)


def corrupt_labels(labels: np.ndarray, fraction: float, num_classes: int,
                   rng: np.random.Generator) -> np.ndarray:
  """Returns a copy of `labels` in which exactly round(fraction * N) entries are wrong.

  The examples to corrupt are drawn without replacement, and each gets a label drawn uniformly from
  the other `num_classes - 1` classes (never its own). So `fraction` is exactly the fraction of
  wrong labels, not the fraction that were resampled: the quantity noisy-label studies report.
  """
  check_fraction("label_noise", fraction)
  if fraction > 0 and num_classes < 2:
    raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
  count = round(fraction * len(labels))
  chosen = rng.choice(len(labels), size=count, replace=False)
  offsets = rng.integers(1, num_classes, size=count)
  noisy = labels.copy()
  noisy[chosen] = (labels[chosen] + offsets) % num_classes
  return noisy


def describe(name: str, train, validation, test,
             num_noisy: int, source: str) -> str:
  """The one-line description a loader puts in `Splits.description`."""
  noise = (f"{num_noisy / train.num_examples:.1%} of train labels ({num_noisy}) replaced"
           if num_noisy else "none")
  sizes = " / ".join(f"{label} {_size(split)}" for label, split in
                     (("train", train), ("validation", validation), ("test", test)))
  return f"{name}: {sizes}; label noise: {noise}; source: {source}"


def _size(split) -> str:
  """A split's example count, or its file count if it is streamed and not counted (never reads)."""
  return str(split.known_size) if split.known_size is not None else f"{len(split.files)} files"
