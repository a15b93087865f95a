"""Occam from Python: `train(...)` does what `python -m trainer.main` does, and returns the results.

>>> import trainer
>>> results = trainer.train(["gin_configs/quickstart.gin"], ["Trainer.train_steps=200"],
...                         model_dir="/tmp/occam/quickstart")            # doctest: +SKIP
>>> results.metrics["test/accuracy"]                                      # doctest: +SKIP
0.95...

The steps of one run, in order: register the configurables, parse the gin files and bindings (each
error names its file or binding), create the strategy, build the run under it (every inconsistency
between the parts is an error here), refuse a config change that would silently make a resumed run
another experiment, and data that changed since the run started (`data.fingerprint`), create the
model_dir, take its lease (one writer per directory, see `runtime.lock`), restore the newest
readable checkpoint, record the config and the data's fingerprint, and train. Bad input
raises before anything is written to model_dir (a directory that did not exist is not created).
`model_dir` is a name, never a pattern, and may be a URL (`gs://...`): all its I/O goes through
`tf.io.gfile`.

Per-evaluation callbacks let another program watch or stop a run in process: each is called as
`callback(step, metrics)` after every validation evaluation, with the loop's train metrics and the
evaluation's; returning True stops training after that loop (a checkpoint is written at that step,
so a later call continues from there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
from typing import Callable, Mapping, Sequence

import gin
import tensorflow as tf

from trainer.common import messages
from trainer.config import guard, parsing, registry
from trainer.data import fingerprint
from trainer.loop import builder, driver, progress
from trainer.loop.settings import Trainer
from trainer.runtime import checkpointing, lock
from trainer.runtime import strategy as strategy_lib

Callback = Callable[[int, Mapping[str, float]], "bool | None"]


@dataclasses.dataclass(frozen=True)
class Results:
  """What `train` returns.

  Attributes:
    metrics: the last loop's train metrics and the final evaluation (`eval/*`, `test/*`, ...).
    model_dir: where the run lives (absolute).
    step: the step training ended at.
    restored_from: the checkpoint the run resumed from, None for a fresh start.
    stopped_by_callback: whether a callback asked to stop.
    run: the built run (`model`, `splits`, `optimizer`, ...), e.g. to use the trained model. Its
      checkpointers are not part of it: training closed them; `trainer.evaluate` reads checkpoints.
  """

  metrics: dict[str, float]
  model_dir: str
  step: int
  restored_from: str | None
  stopped_by_callback: bool
  run: builder.Run


class InvalidRunError(ValueError):
  """The run cannot start: a bad config, model_dir, strategy or checkpoint. Nothing was trained or written.

  The message names the culprit (a huge echoed value shortened, see `common.messages`); the original
  error is its `__cause__`.
  """


class _Callbacks:
  """Eval action that calls the user's callbacks and remembers whether one asked to stop."""

  def __init__(self, callbacks: Sequence[Callback]):
    self._callbacks = tuple(callbacks)
    self.stop_requested = False

  def __call__(self, step: int, scalars: Mapping[str, float]) -> None:
    for callback in self._callbacks:
      if callback(step, dict(scalars)):
        self.stop_requested = True


PATTERN_CHARACTERS = ("[", "\\")


def resolve_model_dir(path: str) -> str:
  """The run's directory as given, made absolute if it is local (`~` expanded); a URL stays as it is.

  The path is never a pattern: everything below treats it as a name (see `checkpointing.checkpoint_steps`).
  """
  if not path or not path.strip():
    raise ValueError(f"--model_dir={path!r} is empty")
  if any(character in path for character in PATTERN_CHARACTERS):
    # TensorFlow's checkpoint reader matches the path as a pattern: `run[1]` finds `run1`, never `run[1]`.
    characters = " or ".join(repr(c) for c in PATTERN_CHARACTERS)
    raise ValueError(f"--model_dir={path}: TensorFlow cannot read checkpoints under a path with {characters} "
                     "(it reads the path as a pattern), so the run could never resume; choose another name")
  if "://" in path:  # gs://bucket/run, ram://run: abspath would make it a local folder named 'gs:'
    return path.rstrip("/")
  return os.path.abspath(os.path.expanduser(path))


def prepare_model_dir(path: str) -> None:
  """Creates `path` if needed and proves it is writable, without touching anything already in it."""
  probe = os.path.join(path, f".write_probe_{os.getpid()}")
  try:
    tf.io.gfile.makedirs(path)
    with tf.io.gfile.GFile(probe, "w") as file:
      file.write("probe")  # an empty write creates no file on some filesystems (ram://)
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as error:
    reason = getattr(error, "message", None) or getattr(error, "strerror", None) or error
    raise ValueError(f"--model_dir={path} is not a writable directory: {reason}") from error


def _require_bindings() -> None:
  """Names the `Trainer` parameters that no gin file or binding set (e.g. a forgotten --gin_file)."""
  required = [name for name, parameter in inspect.signature(Trainer.__init__).parameters.items()
              if parameter.default is gin.REQUIRED]
  missing = []
  for name in required:
    try:
      gin.query_parameter(f"Trainer.{name}")
    except ValueError:
      missing.append(name)
  if missing:
    raise parsing.ConfigError(
        f"no gin file or binding sets {', '.join(f'Trainer.{name}' for name in missing)}: pass a config, "
        "e.g. --gin_file=gin_configs/quickstart.gin (is a --gin_file missing, or empty?)")


def _start(gin_files: Sequence[str], bindings: Sequence[str], *, model_dir: str,
           strategy: str | tf.distribute.Strategy, tpu: str | None, cluster_timeout: float,
           allow_config_change: bool, allow_data_change: bool,
           ) -> tuple[builder.Run, builder.Checkpointers, str | None, lock.Lease | None]:
  """Everything before the first step: the built run, its checkpointers, the checkpoint it restored (None
  if fresh) and the chief's lease on model_dir. Every check runs before the first write to model_dir."""
  registry.register_all()
  parsing.parse(gin_files, bindings)
  model_dir = resolve_model_dir(model_dir)
  if isinstance(strategy, str):
    strategy = strategy_lib.create(strategy, tpu=tpu, cluster_timeout=cluster_timeout)
  is_chief = strategy_lib.worker_role(strategy).is_chief
  _require_bindings()
  run = builder.build(Trainer(), strategy=strategy, model_dir=model_dir, is_chief=is_chief)
  guard.check(model_dir, allow_change=allow_config_change)
  fingerprint.check(model_dir, run.splits, allow_change=allow_data_change)
  prepare_model_dir(model_dir)
  lease = lock.acquire(model_dir) if is_chief else None
  checkpointers = builder.open_checkpointers(run)
  try:
    restored = checkpointers.latest.restore_latest()
    if is_chief:
      guard.record(model_dir)
      fingerprint.record(model_dir, run.splits)
      run.writers.purge_after(int(run.step.numpy()))  # what a killed run logged after its checkpoint
  except BaseException:
    checkpointers.close()
    if lease:
      lease.release()
    raise
  return run, checkpointers, restored, lease


def train(gin_files: Sequence[str] = (), bindings: Sequence[str] = (), *, model_dir: str,
          strategy: str | tf.distribute.Strategy = "default", tpu: str | None = None,
          allow_config_change: bool = False, allow_data_change: bool = False,
          callbacks: Sequence[Callback] = (),
          cluster_timeout: float = strategy_lib.DEFAULT_CLUSTER_TIMEOUT_SECONDS,
          verbose: bool = True) -> Results:
  """Trains (or resumes) the run that the gin files and bindings describe, in `model_dir`.

  Args:
    gin_files: gin files, parsed in order (relative paths also resolve against the installed package).
    bindings: gin bindings applied after the files, e.g. 'Trainer.train_steps=100'.
    model_dir: where checkpoints, event files and the config go; an existing run there resumes.
    strategy: a `tf.distribute.Strategy`, or a name: default, one_device, mirrored,
      multi_worker_mirrored, tpu (see `trainer.runtime.strategy`).
    tpu: with strategy='tpu', the TPU to connect to.
    allow_config_change: resume although bindings that change the experiment differ.
    allow_data_change: resume although the data differ from those the run started on (files added,
      removed or resized, other shapes, counts or contents; see `trainer.data.fingerprint`).
    callbacks: `callback(step, metrics) -> bool | None`, after every validation evaluation.
    cluster_timeout: with strategy='multi_worker_mirrored', how long to wait (seconds) for the other
      workers of TF_CONFIG to come up before giving up with an InvalidRunError.
    verbose: the chief draws a progress bar on stdout (`loop.progress`: the latest loop's and
      evaluation's scalars, the ETA); False draws nothing (the command line logs its lines instead).

  Raises:
    InvalidRunError: bad input (a gin file or binding, model_dir, the strategy, a checkpoint that does
      not fit or does not read, a model_dir another run holds); nothing was written.
    preemption.Preempted: SIGTERM; a checkpoint was written.
    preemption.Interrupted: Ctrl-C (SIGINT), a KeyboardInterrupt; a checkpoint was written. The signal
      handlers are the caller's again when `train` returns or raises.
    recovery.NonFiniteError: a step went non-finite and the policy did not restore.
    tf.errors.UnavailableError (or another of `strategy.PEER_LOST_ERRORS`): in a multi-worker run,
      another worker is gone; rerunning every worker resumes from the last checkpoint.
  """
  try:
    run, checkpointers, restored, lease = _start(
        gin_files, bindings, model_dir=model_dir, strategy=strategy, tpu=tpu,
        cluster_timeout=cluster_timeout, allow_config_change=allow_config_change,
        allow_data_change=allow_data_change)
  except (parsing.ConfigError, checkpointing.ResumeError, ValueError, TypeError) as error:
    raise InvalidRunError(messages.cap(str(error))) from error
  except (OSError, tf.errors.OpError) as error:  # a full disk or a lost filesystem while starting
    raise InvalidRunError(messages.cap(f"--model_dir={model_dir}: cannot start the run: {error}")) from error
  model_dir, is_chief = run.model_dir, run.is_chief
  watcher = _Callbacks(callbacks)
  bars = ([progress.ProgressBar(train_steps=run.config.train_steps, eval_every=run.config.eval_every)]
          if verbose and is_chief else [])
  with lease or contextlib.nullcontext():
    try:
      metrics = driver.train(run, checkpointers, restored=restored,
                             train_actions=([parsing.RecordOperativeConfig(model_dir, run.writers)]
                                            if is_chief else []) + bars,
                             eval_actions=[watcher, *bars], stop_conditions=[lambda: watcher.stop_requested])
    finally:
      for bar in bars:
        bar.close()
  return Results(metrics=metrics, model_dir=model_dir, step=int(run.step.numpy()), restored_from=restored,
                 stopped_by_callback=watcher.stop_requested, run=run)
