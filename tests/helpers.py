"""Test utilities: run the real CLI, read real event files back with TensorBoard's reader."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from typing import Sequence

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator

from trainer.metrics import events
from trainer.metrics.events import read_scalars, read_texts  # noqa: F401  (re-exported for the tests)
from trainer.runtime import compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "gin_configs", "quickstart.gin")
# Dropout puts the RNG state into what must resume exactly. Keras 2 (the tfa lane) draws dropout masks
# from stateful random ops whose state no checkpoint holds, so there exact resume covers models
# without dropout (docs/COMMAND_LINE.md, "What a run writes").
DROPOUT = ["MLP.dropout=0.3"] if compat.IS_KERAS_3 else []
# The experiment tools (sweeps, tuning, reports over event files) hold no code that depends on the Keras or
# TensorFlow version; the training they start is tested in both lanes by the other modules. Their tests
# run in the main lane only (docs/TESTING.md), which keeps the tfa lane within its time budget.
MAIN_LANE_ONLY = pytest.mark.skipif(
    not compat.IS_KERAS_3, reason="an experiment tool, independent of the Keras version: main lane only")
# Small, fast settings layered over the shipped quickstart.
FAST = ["Trainer.train_steps=200", "Trainer.steps_per_loop=50", "Trainer.eval_every=100",
        "Trainer.checkpoint_every=100"]


def run_cli(args: Sequence[str], *, cwd: str = REPO, timeout: float = 240) -> subprocess.CompletedProcess:
  """`python -m trainer.main ARGS` in a fresh process; stdout and stderr captured together."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "trainer.main", *args], cwd=cwd, env=env, timeout=timeout,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def server_scalars(event_dir: str) -> dict[str, list[tuple[int, float]]]:
  """The float scalars of `event_dir` as the TensorBoard server reads them (its reader, every value kept).

  Unlike `read_scalars` (TensorBoard's older `EventAccumulator`), it drops what a killed run logged
  after the checkpoint its resume started from, as TensorBoard shows it.
  """
  accumulator = plugin_event_accumulator.EventAccumulator(
      event_dir, size_guidance={plugin_event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return events.float_scalars(accumulator)


def checkpoint_values(model_dir: str) -> dict[str, np.ndarray]:
  """Every numeric tensor (weights, optimizer slots, step) in the newest checkpoint of a run.

  Keys are TensorFlow's object-graph paths; Keras 3 reaches the model's weights first through the
  optimizer (`optimizer/_trainable_variables/N`), so do not filter on a `model/` prefix.
  """
  reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
  return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
          if key not in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")}


def train_in_process(model_dir: str, bindings: Sequence[str] = (), *, strategy=None,
                     gin_files: Sequence[str] = (QUICKSTART,)):
  """`trainer.train` in this process; returns (the built run, its final metrics)."""
  import trainer
  results = trainer.train(list(gin_files), list(bindings), model_dir=model_dir,
                          strategy=strategy or tf.distribute.get_strategy())
  return results.run, results.metrics


def model_weights(trainer) -> list[tuple[str, np.ndarray]]:
  """The trainer's model variables (weights, BatchNorm statistics, dropout RNG state) as numpy, in order.

  A list, not a dict: Keras names RNG seed generators per process (`seed_generator_4`), so two
  models built in one process agree on positions, not on those names.
  """
  return [(compat.variable_path(v), np.array(v.numpy())) for v in trainer.model.variables]


def assert_same_weights(got, expected, *, atol: float = 0.0) -> None:
  """Every variable of two `model_weights` lists equal (bit for bit when atol is 0)."""
  assert len(got) == len(expected)
  for (name, value), (_, reference) in zip(got, expected):
    if atol:
      np.testing.assert_allclose(value, reference, atol=atol, rtol=0, err_msg=name)
    else:
      np.testing.assert_array_equal(value, reference, err_msg=name)


def run_main(args: Sequence[str]) -> int:
  """The CLI's code path (`trainer.main.run`) in this process, with `args` as the command line."""
  from absl import flags

  from trainer import main
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["occam", *args])
  return main.run([])


def kernel_arrays(trainer) -> list[np.ndarray]:
  """The model's rank-2+ trainable weights (the kernels) as numpy arrays."""
  return [v.numpy() for v in trainer.model.trainable_variables if len(v.shape) >= 2]


# A 20-step quickstart with a checkpoint, an evaluation and a log line every 10 steps (the fault tests' run).
SHORT = ["Trainer.steps_per_loop=10", "Trainer.checkpoint_every=10", "Trainer.eval_every=10",
         "MLP.hidden_sizes=(8,)"]


def short_run_args(model_dir, steps: int = 20, extra: Sequence[str] = ()) -> list[str]:
  """The command line of a SHORT quickstart run of `steps` steps in `model_dir`, `extra` bindings last."""
  bindings = [f"Trainer.train_steps={steps}", *SHORT, *extra]
  return [f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}"] + [f"--gin_bindings={b}" for b in bindings]


def run_main_captured(args: Sequence[str], capsys, caplog) -> tuple[int, str]:
  """`run_main` with pytest's capsys and caplog: (exit code, everything it printed and logged).

  Also asserts that no traceback reached the user.
  """
  caplog.clear()
  with caplog.at_level(logging.INFO):
    code = run_main(args)
  captured = capsys.readouterr()
  output = captured.out + captured.err + caplog.text
  assert "Traceback" not in output
  return code, output


def snapshot(directory) -> dict[str, str]:
  """{relative path: sha256} of every file under `directory`: what a refused run must leave unchanged."""
  result = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as file:
        result[os.path.relpath(path, directory)] = hashlib.sha256(file.read()).hexdigest()
  return result


def prepare_tiny_tfds(data_dir: str, file_format: str = "tfrecord") -> None:
  """Prepares `tiny_digits` (12 4x4 images; pixel value 10*i, label i % 3) offline into data_dir.

  The builder is not registered, so the loader must read it from the prepared files alone, as it
  would on a training machine that has the data but not the builder code.
  """
  tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
  tfds.disable_progress_bar()

  with tfds.core.registered.skip_registration():

    class TinyDigits(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")
      # TFDS looks up the code of a builder defined in a dotted module as a package resource (and needs
      # `importlib_resources` for a namespace package such as tests/); this one has no code to find.
      __module__ = "tiny_digits"

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(4, 4, 1)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

      def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {"train": self._generate_examples(range(6)),
                "validation": self._generate_examples(range(6, 9)),
                "test": self._generate_examples(range(9, 12))}

      def _generate_examples(self, indices):
        for i in indices:
          yield i, {"image": np.full((4, 4, 1), 10 * i, np.uint8), "label": i % 3}

  TinyDigits(data_dir=data_dir, file_format=file_format).download_and_prepare()
