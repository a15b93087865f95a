r"""Occam's command line: `python -m trainer.main --gin_file=... --model_dir=...` (or `occam-train`).

Flags say only *where* (config files, bindings, output directory, strategy); *what* is trained is
gin's job. Every input is checked before anything is written to `--model_dir`.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Iterator

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
flags.DEFINE_float("cluster_timeout", 300.0, "With --strategy=multi_worker_mirrored: seconds to wait for "
                   "every other worker of TF_CONFIG to come up before giving up with exit status 2.")
flags.DEFINE_integer("virtual_devices", 0, "Split the CPU into this many logical devices (try distribution "
                     "on a laptop); 0 leaves devices alone.")
flags.DEFINE_bool("deterministic", False, "Enable TensorFlow op determinism "
                  "(tf.config.experimental.enable_op_determinism): bit-identical reruns and resumes, "
                  "at some speed cost on GPU.")
flags.DEFINE_bool("allow_config_change", False, "Resume even though bindings that change the experiment "
                  "(model, data, regularization, optimizer) differ from the run's stored config.gin.")
flags.DEFINE_bool("allow_data_change", False, "Resume even though the data differ from those the run was "
                  "started on (files added, removed or resized; other shapes, counts or contents).")
flags.DEFINE_bool("mock_data", False, "Check a config end to end before its data is prepared: every TFDS "
                  "dataset (tfds.*) is TFDS's mock data (random examples of the real shapes), and the run is "
                  "shrunk to 2 steps of batch 8 (trainer.data.mock.SHRINK; your bindings still win). Use a "
                  "scratch --model_dir.")
flags.DEFINE_bool("list_configurables", False, "List every configurable a gin config can name (Occam's "
                  "and the registered Keras ones), with its first docstring line, and exit.")
flags.DEFINE_string("describe", None, "Print one configurable's signature (parameters and defaults; "
                    "REQUIRED ones need a binding) and docstring, e.g. --describe=WarmupCosine, and exit.")
flags.register_multi_flags_validator(
    ["model_dir", "list_configurables", "describe"],
    lambda values: bool(values["model_dir"] or values["list_configurables"] or values["describe"]),
    message="--model_dir is required (unless --list_configurables or --describe)")

# Exit statuses (also in docs/COMMAND_LINE.md): 0 done, 2 bad input (nothing written), 3 a non-finite loss,
# penalty or gradient (last good checkpoint untouched), 65 bad data met mid-run (the file and record named,
# last checkpoint untouched), 74 a checkpoint or another file of the run could not be written mid-run (a
# full disk: nothing half-written, earlier checkpoints intact), 75 preempted by SIGTERM/SIGINT (checkpoint
# written; rerun the same command to resume), and also 75 when another worker of a multi-worker run is
# lost (rerun every worker to resume from the last checkpoint).
EXIT_BAD_INPUT = 2


def run(argv) -> int:
  """Applies the process-wide flags, trains through `trainer.api.train`, and maps errors to exit codes."""
  del argv
  from trainer.runtime import console

  console.quiet(verbose=FLAGS.verbosity >= 1)
  if FLAGS.list_configurables or FLAGS.describe:
    return _catalog()
  # Imported here so that `--help` and flag errors do not pay for TensorFlow.
  import tensorflow as tf

  from trainer import api
  from trainer.data import diagnosis
  from trainer.loop import recovery
  from trainer.runtime import checkpointing, preemption
  from trainer.runtime import strategy as strategy_lib

  try:
    if FLAGS.deterministic:
      tf.config.experimental.enable_op_determinism()
    if FLAGS.virtual_devices:
      strategy_lib.split_cpu(FLAGS.virtual_devices)
    with _data_mode() as mock_bindings:
      api.train(FLAGS.gin_file, [*mock_bindings, *FLAGS.gin_bindings], model_dir=FLAGS.model_dir,
                strategy=FLAGS.strategy, tpu=FLAGS.tpu, allow_config_change=FLAGS.allow_config_change,
                allow_data_change=FLAGS.allow_data_change,
                cluster_timeout=FLAGS.cluster_timeout, verbose=False)  # its log lines show the progress
  except (api.InvalidRunError, strategy_lib.StrategyError) as error:
    return _fail(error, EXIT_BAD_INPUT)
  except (preemption.Preempted, preemption.Interrupted) as stop:  # SIGTERM, Ctrl-C: checkpoint written
    logging.warning("%s", stop)
    return preemption.EXIT_PREEMPTED
  except recovery.NonFiniteError as error:
    return _fail(error, recovery.EXIT_NONFINITE)
  except diagnosis.InputError as error:
    return _fail(error, diagnosis.EXIT_BAD_DATA)
  except checkpointing.WriteError as error:
    return _fail(error, checkpointing.EXIT_WRITE_FAILED)
  except strategy_lib.PEER_LOST_ERRORS as error:
    if FLAGS.strategy != "multi_worker_mirrored":
      raise
    # Like a preemption: the run is intact up to its last checkpoint; a rerun of all workers resumes.
    return _fail(strategy_lib.worker_lost_message(error, api.resolve_model_dir(FLAGS.model_dir)),
                 preemption.EXIT_PREEMPTED)
  return 0  # the driver logged the final block and wrote model_dir/results.json


@contextlib.contextmanager
def _data_mode() -> Iterator[list[str]]:
  """With --mock_data, TFDS's mock data and the bindings that shrink the run; else the real data."""
  if not FLAGS.mock_data:
    yield []
    return
  from trainer.data import mock

  with mock.mock_tfds() as bindings:
    logging.warning("--mock_data: TFDS datasets are random mock data and the run is shrunk (%s); its "
                    "metrics mean nothing", " ".join(bindings))
    yield bindings


def _catalog() -> int:
  """--list_configurables / --describe: generated from gin's registry; 2 for an unknown name."""
  from trainer.config import catalog

  try:
    print(catalog.list_configurables() if FLAGS.list_configurables else catalog.describe(FLAGS.describe))
  except catalog.UnknownConfigurableError as error:
    return _fail(error, EXIT_BAD_INPUT)
  return 0


def _fail(error: Exception | str, status: int) -> int:
  """Prints the error once, as one `occam: error:` line (not also as a log line, a huge echoed value
  shortened); returns `status`."""
  from trainer.common import messages

  print(f"occam: error: {messages.cap(str(error))}", file=sys.stderr)
  return status


HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-?")
VERBOSITY_HELP = ("  -v,--verbosity: 0 (the default) shows Occam's lines only; 1 also TensorFlow's start-up\n"
                  "    block and its libraries' INFO lines.\n    (default: '0')\n    (an integer)")


def usage() -> str:
  """`--help`: the module docstring, Occam's flags and --verbosity (absl's --helpfull lists all)."""
  module = FLAGS.find_module_defining_flag("gin_file")
  flags_help = re.sub(r"--\[no\](\w+)", r"--\1 (--no\1)", FLAGS.module_help(module))  # as they are typed
  return f"{__doc__}\n{flags_help}\n{VERBOSITY_HELP}\n\nEvery flag, absl's included: --helpfull"


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but a bad command line (unknown flag, missing --model_dir) exits with
  EXIT_BAD_INPUT like any other bad input, with one line instead of the usage text; `--help` prints
  `usage()` and exits 0 (absl's own exits 1 and leaves out --verbosity)."""
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    print(usage())
    sys.exit(0)
  try:
    return FLAGS(argv)
  except flags.Error as error:
    print(f"occam: error: {error} (see --helpfull)", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def main() -> None:
  """Console-script entry point (`occam-train`)."""
  app.run(lambda argv: sys.exit(run(argv)), flags_parser=_parse_flags)


if __name__ == "__main__":
  main()
