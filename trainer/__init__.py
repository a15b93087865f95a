"""Occam: a TensorFlow 2 training framework for regularization and generalization research.

The package's parts, from the bottom up (a module imports only from its own part or lower ones):

  common/          argument checks, atomic file writes
  runtime/         strategies, Keras 2/3 compatibility, checkpoints, preemption, SavedModel export
  data/            loaders (digits, teacher-student, TFRecord, TFDS) and the tf.data pipeline
  regularization/  terms (L2, L1, DecoupledWeightDecay, ProximalL1, Mixup, CutMix, SAM), the variable
                   selector, tfa
  metrics/         the tag registry, the Monitor, weight statistics, sharpness, HParams, event I/O
  loop/            the gin root `Trainer`, the run builder, runners, Controller, actions, programs
  config/          gin parsing, the resume guard, `register_all()`
  api.py, main.py  `trainer.train(...)` and the command line
  experiments/     sweeps, reports, results as pandas DataFrames
  benchmarks/      throughput, start-up and data-scale benchmarks (behind scripts/benchmark*.py)

The public Python API, importable without paying for TensorFlow until it is used:

  trainer.train(gin_files, bindings, model_dir=..., strategy=..., callbacks=...) -> trainer.Results
  trainer.run_scalars(model_dir) -> pandas.DataFrame;  trainer.sweep_scalars(sweep_dir) -> DataFrame

docs/ARCHITECTURE.md draws the parts and the flow of one run.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "train": "trainer.api",
    "Results": "trainer.api",
    "InvalidRunError": "trainer.api",
    "run_scalars": "trainer.experiments.results",
    "sweep_scalars": "trainer.experiments.results",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
  """Imports a public name's module on first use (so `import trainer` and `--help` stay fast).

  A program that has not imported TensorFlow yet gets the command line's quiet console: TensorFlow's
  start-up block and its native INFO, warning and error lines (`failed call to cuInit` on a machine
  without a GPU) stay off the console; import TensorFlow first to keep them.
  """
  if name in _PUBLIC:
    from trainer.runtime import console
    console.quiet(verbose=False)
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  raise AttributeError(f"module 'trainer' has no attribute {name!r}")
