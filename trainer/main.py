r"""Occam's command line: `python -m trainer.main --gin_file=... --model_dir=...` (or `occam-train`).

Flags say only *where* (config files, bindings, output directory, strategy); *what* is trained is
gin's job. Every input is checked before anything is written to `--model_dir`.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), parsed in order. Relative paths also "
                          "resolve against the installed package, e.g. gin_configs/quickstart.gin.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings applied after the files, "
                          "e.g. 'Trainer.train_steps=100'.")
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


def run(argv) -> int:
  """Applies the process-wide flags, trains through `trainer.api.train`, and maps errors to exit codes."""
  del argv
  # Imported here so that `--help` and flag errors do not pay for TensorFlow.
  import tensorflow as tf

  from trainer import api
  from trainer.loop import recovery
  from trainer.runtime import preemption
  from trainer.runtime import strategy as strategy_lib

  try:
    if FLAGS.deterministic:
      tf.config.experimental.enable_op_determinism()
    if FLAGS.virtual_devices:
      strategy_lib.split_cpu(FLAGS.virtual_devices)
    results = api.train(FLAGS.gin_file, FLAGS.gin_bindings, model_dir=FLAGS.model_dir,
                        strategy=FLAGS.strategy, tpu=FLAGS.tpu, allow_config_change=FLAGS.allow_config_change)
  except (api.InvalidRunError, strategy_lib.StrategyError) as error:
    return _fail(error, EXIT_BAD_INPUT)
  except preemption.Preempted as stop:
    logging.warning("%s", stop)
    return preemption.EXIT_PREEMPTED
  except recovery.NonFiniteError as error:
    return _fail(error, recovery.EXIT_NONFINITE)
  logging.info("final | %s", " | ".join(f"{k}: {v:.4g}" for k, v in sorted(results.metrics.items())
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
