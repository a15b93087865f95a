r"""Occam's command line: `python -m trainer.main --gin_file=... --model_dir=...` (or `occam-train`).

Flags say only *where* (config files, bindings, output directory, strategy); *what* is trained is
gin's job. Every input is checked before anything is written to `--model_dir`.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), parsed in order. Relative paths also "
                          "resolve against the installed package, e.g. gin_configs/quickstart.gin.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings applied after the files, e.g. 'Trainer.train_steps=100'.")
flags.DEFINE_string("model_dir", None, "Where checkpoints, event files and the operative config go. "
                    "Rerunning with the same directory resumes.")
flags.DEFINE_string("strategy", "default", "Distribution strategy: default, one_device, mirrored, "
                    "multi_worker_mirrored (reads TF_CONFIG), tpu.")
flags.DEFINE_string("tpu", None, "With --strategy=tpu: 'local' on a Cloud TPU VM (the default), a TPU name, "
                    "or grpc://ADDRESS:8470.")
flags.DEFINE_integer("virtual_devices", 0, "Split the CPU into this many logical devices (try distribution "
                     "on a laptop); 0 leaves devices alone.")
flags.DEFINE_bool("deterministic", False, "Enable TensorFlow op determinism "
                  "(tf.config.experimental.enable_op_determinism): bit-identical reruns and resumes, "
                  "at some speed cost on GPU.")
flags.DEFINE_bool("allow_config_change", False, "Resume even though bindings that change the experiment "
                  "(model, data, regularization, optimizer) differ from the run's stored config.gin.")
flags.mark_flag_as_required("model_dir")

# Exit statuses (also in the README): 0 done, 2 bad input (nothing written), 3 a non-finite loss, penalty
# or gradient (last good checkpoint untouched), 75 preempted by SIGTERM/SIGINT (checkpoint written;
# rerun the same command to resume).
EXIT_BAD_INPUT = 2


def _prepare_model_dir(path: str) -> str:
  """Creates `path` if needed and proves it is writable, without touching anything already in it."""
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_probe_{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as error:
    raise ValueError(f"--model_dir={path} is not a writable directory: {error.strerror or error}") from error
  return path


def run(argv) -> int:
  """Parses config, builds the strategy and the Trainer, and trains. Returns the process exit code."""
  del argv
  # Imported here so that `--help` and flag errors do not pay for TensorFlow.
  import tensorflow as tf
  from trainer.runtime import checkpointing
  from trainer.config import parsing as config
  from trainer.config import guard as config_guard
  from trainer.loop import controller
  from trainer.runtime import preemption
  from trainer.runtime import strategy as strategy_lib
  from trainer.loop import trainer as trainer_lib  # noqa: F401  (registers gin configurables)
  import models  # noqa: F401
  from trainer import data  # noqa: F401
  from trainer.config import registry
  from trainer.regularization import terms as regularizers

  try:
    if FLAGS.deterministic:
      tf.config.experimental.enable_op_determinism()
    if FLAGS.virtual_devices:
      strategy_lib.split_cpu(FLAGS.virtual_devices)
    config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
    model_dir = _prepare_model_dir(FLAGS.model_dir)
    config_guard.check(model_dir, allow_change=FLAGS.allow_config_change)
    strategy = strategy_lib.create(FLAGS.strategy, tpu=FLAGS.tpu)
    is_chief = strategy_lib.worker_role(strategy).is_chief
    with strategy.scope():
      trainer = trainer_lib.Trainer(strategy=strategy, model_dir=model_dir, is_chief=is_chief)
    trainer.restore()
    if is_chief:
      config_guard.record(model_dir)
  except (config.ConfigError, checkpointing.ResumeError, ValueError, TypeError) as error:
    return _fail(error, EXIT_BAD_INPUT)
  try:
    results = trainer.run()
  except preemption.Preempted as stop:
    logging.warning("%s", stop)
    return preemption.EXIT_PREEMPTED
  except controller.NonFiniteError as error:
    return _fail(error, controller.EXIT_NONFINITE)
  logging.info("final | %s", " | ".join(f"{k}: {v:.4g}" for k, v in sorted(results.items())
                                         if k.split("/")[0] in ("eval", "test", "train")))
  return 0


def _fail(error: Exception, status: int) -> int:
  logging.error("%s", error)
  print(f"occam: error: {error}", file=sys.stderr)
  return status


def main() -> None:
  """Console-script entry point (`occam-train`)."""
  app.run(lambda argv: sys.exit(run(argv)))


if __name__ == "__main__":
  main()
