"""Teacher-student data: labels produced by a fixed random network, so the true function is known.

Generalization experiments need a task whose ground truth is exact and whose size, dimension and
noise level are free parameters. Inputs are standard Gaussian; the teacher is a one-hidden-layer
tanh MLP with Gaussian weights, built in numpy from the seed alone (no TF randomness, so the data
are identical across TF versions and devices).
"""

from __future__ import annotations

import dataclasses

import gin
import numpy as np

from trainer.data.arrays import ArrayData, check_fraction, corrupt_labels
from trainer.data.splits import Splits, describe

# Independent random streams derived from the one `seed`, so changing a size never changes the
# teacher, and the noise draw never changes the inputs.
_TEACHER_STREAM, _INPUT_STREAM, _NOISE_STREAM = 0, 1, 2


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
  """A fixed MLP, `tanh(x @ w1 + b1) @ w2`; its output is the logits (or regression targets)."""

  w1: np.ndarray
  b1: np.ndarray
  w2: np.ndarray

  def __call__(self, inputs: np.ndarray) -> np.ndarray:
    return np.tanh(inputs @ self.w1 + self.b1) @ self.w2


def teacher_network(*, input_dim: int, hidden: int, num_outputs: int, seed: int) -> Teacher:
  """The teacher of `teacher_student(seed=seed)` with these sizes.

  Weights are scaled by 1/sqrt(fan-in) so hidden units neither saturate nor vanish and every output
  is used; there is no output bias, which keeps the classes roughly (not exactly) balanced.
  """
  rng = np.random.default_rng([seed, _TEACHER_STREAM])
  return Teacher(w1=rng.normal(size=(input_dim, hidden)) / np.sqrt(input_dim),
                 b1=rng.normal(scale=0.1, size=hidden),
                 w2=rng.normal(size=(hidden, num_outputs)) / np.sqrt(hidden))


def _check_positive(**sizes: int) -> None:
  """Raises a ValueError naming the first argument that is not a positive integer."""
  for name, value in sizes.items():
    if value < 1:
      raise ValueError(f"{name} must be at least 1, got {value}")


@gin.configurable
def teacher_student(*, input_dim: int = 16, hidden: int = 32, num_classes: int | None = 10,
                    num_train: int = 1024, num_validation: int = 256, num_test: int = 256,
                    label_noise: float = 0.0, seed: int = 0) -> Splits:
  """Gaussian inputs labelled by a random teacher MLP (see `teacher_network`).

  Args:
    input_dim: input dimension; features are float32 (N, input_dim) drawn from N(0, I).
    hidden: width of the teacher's hidden layer.
    num_classes: classification with int32 labels = argmax of the teacher's `num_classes` outputs
      (at least 2). None or 0 means regression: float32 targets (N, 1) = the teacher's one output.
    num_train, num_validation, num_test: split sizes.
    label_noise: fraction in [0, 1] of TRAIN labels made wrong, with the same convention as
      `digits`: exactly round(label_noise * num_train) labels, each replaced by one drawn uniformly
      from the other classes. Classification only; validation and test stay clean.
    seed: determines the teacher, the inputs and the noise (through independent streams).

  Returns:
    Splits; `num_classes` is None for regression.
  """
  _check_positive(input_dim=input_dim, hidden=hidden, num_train=num_train,
                  num_validation=num_validation, num_test=num_test)
  label_noise = check_fraction("label_noise", label_noise)
  regression = not num_classes
  if regression and label_noise:
    raise ValueError("label_noise applies to classification only; got num_classes="
                     f"{num_classes} (regression) with label_noise={label_noise}")
  if not regression and num_classes < 2:
    raise ValueError(f"num_classes must be at least 2 (or None for regression), got {num_classes}")

  teacher = teacher_network(input_dim=input_dim, hidden=hidden,
                            num_outputs=1 if regression else num_classes, seed=seed)
  inputs = np.random.default_rng([seed, _INPUT_STREAM]).normal(
      size=(num_train + num_validation + num_test, input_dim))
  outputs = teacher(inputs)
  labels = outputs.astype(np.float32) if regression else outputs.argmax(axis=1).astype(np.int32)
  features = inputs.astype(np.float32)
  bounds = [num_train, num_train + num_validation]
  (train_x, validation_x, test_x), (train_y, validation_y, test_y) = (
      np.split(features, bounds), np.split(labels, bounds))
  noisy_y = train_y if regression else corrupt_labels(
      train_y, label_noise, num_classes, np.random.default_rng([seed, _NOISE_STREAM]))
  train = ArrayData(train_x, noisy_y)
  validation = ArrayData(validation_x, validation_y)
  test = ArrayData(test_x, test_y)
  num_noisy = int(np.sum(noisy_y != train_y))
  source = f"teacher MLP {input_dim}-{hidden}-{1 if regression else num_classes}, seed {seed}"
  return Splits(name="teacher_student", train=train, validation=validation, test=test,
                num_classes=None if regression else num_classes,
                description=describe("teacher_student", train, validation, test, num_noisy, source),
                label_noise=label_noise)
