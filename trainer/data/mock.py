"""Any recipe end to end on TensorFlow Datasets' mock data, in one command: `--mock_data`.

A recipe (gin_configs/imagenet2012/resnet50.gin, ...) reads a TFDS dataset that takes hours to prepare
and a cluster to train on. `tfds.testing.mock_data` makes every TFDS dataset return random examples of
its real features (shapes, dtypes, class counts) without reading a file, so the whole config (model,
preprocessing, regularizers, optimizer, schedule, evaluation, checkpoints, export) runs through once on
a CPU before the data or the cluster is booked. `SHRINK` makes that run small: two steps of batch 8,
every periodic action at step 2; the model keeps its size (shrink it with a binding, e.g.
`CifarResNet.depth=8`, for a quicker check).
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import Iterator

from trainer.data import loaders

EXAMPLES = 16  # per split: two batches of 8
SHRINK = ("Trainer.batch_size=8", "Trainer.eval_batch_size=8", "Trainer.train_steps=2",
          "Trainer.steps_per_loop=1", "Trainer.eval_every=2", "Trainer.checkpoint_every=2",
          "Monitor.train_eval_examples=8", "Monitor.sharpness_examples=8")


@contextlib.contextmanager
def mock_tfds(num_examples: int = EXAMPLES) -> Iterator[list[str]]:
  """While open, every TFDS dataset is mock data of `num_examples` per split; yields the bindings to put
  before the user's (`SHRINK`, and a scratch `tfds.data_dir` that nothing is read from)."""
  tensorflow_datasets = loaders.import_tfds()
  with tempfile.TemporaryDirectory(prefix="occam_mock_tfds_") as data_dir, \
       tensorflow_datasets.testing.mock_data(num_examples=num_examples, data_dir=data_dir,
                                             as_data_source_fn=_serialized_source(num_examples)):
    yield [*SHRINK, f"tfds.data_dir='{data_dir}'"]


class _Records(list):
  """Serialized examples with the batch read of an ArrayRecord data source (`__getitems__`)."""

  def __getitems__(self, keys):
    return [self[key] for key in keys]


def _serialized_source(num_examples: int):
  """`as_data_source` for the mock: every split is `num_examples` random examples of the dataset's
  features, serialized as the prepared files hold them (the `tfds` loader reads the bytes and parses
  them in the graph; TFDS's own mock serves neither bytes nor batch reads)."""
  from tensorflow_datasets.testing import mocking  # imported with TFDS, an optional dependency

  def as_data_source(builder, split=None, **unused):
    del split, unused  # every split is the same mock data
    features = builder.info.features
    fakes = mocking.RandomFakeGenerator(features, num_examples)
    return _Records(features.serialize_example(fakes[index]) for index in range(num_examples))
  return as_data_source
