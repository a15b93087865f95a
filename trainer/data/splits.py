"""`Splits`: a dataset as train / validation / test splits, the one type every loader returns.

A split is any kind the pipeline reads: an `ArrayData` (`trainer.data.arrays`, in RAM or memory-mapped)
or a split of `trainer.data.sources` (`IndexedData`, `RecordData`). `Splits` checks that the three
agree (example shape and dtype, label kind and range) and carries the one-line description a loader
builds with `describe`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trainer.data.arrays import ArrayData


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
    label_noise: the configured fraction of wrong training labels (0.0 for a loader without label
      noise); HParams reports it.
  """

  name: str
  train: ArrayData
  validation: ArrayData
  test: ArrayData
  num_classes: int | None
  description: str
  label_noise: float = 0.0

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
