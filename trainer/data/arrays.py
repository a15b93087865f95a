"""Array datasets: the split container most loaders return, and label noise.

An `ArrayData` split is a pair of numpy arrays: held in RAM, or memory-mapped from a `.npy` file
(`np.load(path, mmap_mode='r')`), in which case the input pipeline reads only the examples of each
batch and memory stays flat in the dataset's size. Images are best kept as uint8 (a quarter of
float32); the pipeline converts them on the fly. Splits of other kinds (random access through a
TFDS data source, sequential TFRecord shards) live in `trainer.data.sources`; `trainer.data.splits.Splits`
holds any.
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
