"""Long-lived worker processes that train runs in process, shared by `occam-sweep` and `occam-tune`.

Starting `python -m trainer.main` per run pays TensorFlow's import and start-up every time. Instead,
`run_workers` runs one worker in this process (which has imported TensorFlow already, to validate the
config) and spawns the others, and every worker trains its runs one after another with `train_point`:
`trainer.api.train` resets gin, the Keras precision policy and every seed for each run, and the Keras
session is cleared before it, so a run's result does not depend on what its worker trained before.
"""

from __future__ import annotations

import contextlib
import logging as py_logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Callable, Iterator, Sequence

from trainer.experiments import layout

LOG_FORMAT = "%(levelname).1s %(asctime)s %(message)s"


@contextlib.contextmanager
def point_log(path: str) -> Iterator[None]:
  """Appends this process's log lines (absl's at INFO and up, TensorFlow's) to `path` while a run trains.

  It takes the place of the trainer's console output in a point's `log.txt`; the lines stay off this
  process's console (the root logger's handlers), which shows the workers' progress instead. An
  exception leaving the block is logged there too (with a traceback unless it is one of the run's own
  failures, bad input or a non-finite loss, whose message says it all), so the log says why it stopped.
  """
  from absl import logging
  handler = py_logging.FileHandler(path)
  handler.setFormatter(py_logging.Formatter(LOG_FORMAT))
  loggers = [logging.get_absl_logger(), py_logging.getLogger("tensorflow")]
  propagate = [logger.propagate for logger in loggers]
  for logger in loggers:
    logger.addHandler(handler)
    logger.propagate = False
  logging.set_verbosity(logging.INFO)
  try:
    yield
  except Exception as error:
    from trainer import api
    from trainer.loop import recovery
    expected = isinstance(error, (api.InvalidRunError, recovery.NonFiniteError))
    logging.error("%s: %s", type(error).__name__, error, exc_info=not expected)
    raise
  finally:
    for logger, previous in zip(loggers, propagate):
      logger.propagate = previous
      logger.removeHandler(handler)
    handler.close()


def train_point(gin_files: Sequence[str], bindings: Sequence[str], model_dir: str,
                callbacks: Sequence[Callable] = ()):
  """Trains (or resumes) one run in this process, its log appended to `model_dir/log.txt`.

  Returns `trainer.api.Results`; raises what `trainer.api.train` raises (logged to the log first).
  """
  import tensorflow as tf

  from trainer import api
  tf.keras.backend.clear_session()  # Drops the previous run's graphs and layer-name counters.
  with point_log(os.path.join(model_dir, layout.LOG_FILE)):
    return api.train(gin_files, bindings, model_dir=model_dir, callbacks=list(callbacks), verbose=False)


def _exit_with(target: Callable[..., int], args: tuple, worker: int) -> None:
  """A spawned worker: `target`'s exit code, on the command line's quiet console (no TensorFlow start-up
  block, no `failed call to cuInit` line per worker)."""
  from trainer.runtime import console
  console.quiet(verbose=False)
  sys.exit(target(*args, worker))


def _reap(process: multiprocessing.Process) -> None:
  """Waits for `process` and collects its exit status as soon as it exits, saying so if it failed.

  Left unreaped until the end, a killed worker would stay a zombie: a process whose pid still exists,
  which could pass for alive (the lease of the run it was training, `trainer.runtime.lock`, knows
  better, but other tools may not).
  """
  process.join()
  code = process.exitcode
  if code:
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    print(f"{process.name} (pid {process.pid}) {how}", file=sys.stderr, flush=True)


def run_workers(target: Callable[..., int], args: tuple, parallel: int, name: str,
                python: str | None = None) -> list[int]:
  """Runs `target(*args, k)` for k in 0..parallel-1; the exit codes, in worker order.

  Worker 0 is this process; the others are spawned (a fresh interpreter, not a forked TensorFlow)
  with `python` (default: this interpreter), each reaped by a thread of this process as soon as it
  exits (`_reap`). `target` and `args` must be picklable.
  """
  context = multiprocessing.get_context("spawn")
  if python and os.path.realpath(python) != os.path.realpath(sys.executable):
    context.set_executable(python)
  others = [context.Process(target=_exit_with, args=(target, args, k), name=f"{name}-{k}")
            for k in range(1, parallel)]
  reapers = []
  for process in others:
    process.start()
    reapers.append(threading.Thread(target=_reap, args=(process,), name=f"reap-{process.name}", daemon=True))
    reapers[-1].start()
  try:
    codes = [target(*args, 0)]
  finally:
    for reaper in reapers:
      reaper.join()
  return codes + [process.exitcode for process in others]
