"""Occam from Python: `train(...)` does what `python -m trainer.main` does, and returns the results.

>>> import trainer
>>> results = trainer.train(["gin_configs/quickstart.gin"], ["Trainer.train_steps=200"],
...                         model_dir="/tmp/occam/quickstart")            # doctest: +SKIP
>>> results.metrics["test/accuracy"]                                      # doctest: +SKIP
0.95...

The steps of one run, in order: register the configurables, parse the gin files and bindings (each
error names its file or binding), create the strategy, build the run under it (every inconsistency
between the parts is an error here), create the model_dir, refuse a config change that would
silently make a resumed run another experiment, restore the newest checkpoint, record the config,
and train. Bad input raises before anything is written to model_dir.

Per-evaluation callbacks let another program watch or stop a run in process: each is called as
`callback(step, metrics)` after every validation evaluation, with the loop's train metrics and the
evaluation's; returning True stops training after that loop (a checkpoint is written at that step,
so a later call continues from there).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping, Sequence

import tensorflow as tf

from trainer.config import guard, parsing, registry
from trainer.loop import builder, driver
from trainer.loop.trainer import Trainer
from trainer.runtime import checkpointing
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
    run: the built run (`model`, `splits`, `optimizer`, ...), e.g. to use the trained model.
  """

  metrics: dict[str, float]
  model_dir: str
  step: int
  restored_from: str | None
  stopped_by_callback: bool
  run: builder.Run


class InvalidRunError(ValueError):
  """The run cannot start: a bad config, model_dir, strategy or checkpoint. Nothing was trained or written.

  The message names the culprit; the original error is its `__cause__`.
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


def prepare_model_dir(path: str) -> None:
  """Creates `path` if needed and proves it is writable, without touching anything already in it."""
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_probe_{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as error:
    raise ValueError(f"--model_dir={path} is not a writable directory: {error.strerror or error}") from error


def _start(gin_files: Sequence[str], bindings: Sequence[str], *, model_dir: str,
           strategy: str | tf.distribute.Strategy, tpu: str | None,
           allow_config_change: bool) -> tuple[builder.Run, str | None]:
  """Everything before the first step: the built run and the checkpoint it restored (None if fresh)."""
  registry.register_all()
  parsing.parse(gin_files, bindings)
  model_dir = os.path.abspath(os.path.expanduser(model_dir))
  if isinstance(strategy, str):
    strategy = strategy_lib.create(strategy, tpu=tpu)
  is_chief = strategy_lib.worker_role(strategy).is_chief
  with strategy.scope():  # configurables with state (EarlyStopping) create it under the strategy
    settings = Trainer()
  run = builder.build(settings, strategy=strategy, model_dir=model_dir, is_chief=is_chief)
  prepare_model_dir(model_dir)
  guard.check(model_dir, allow_change=allow_config_change)
  restored = run.checkpointer.restore_latest()
  if is_chief:
    guard.record(model_dir)
  return run, restored


def train(gin_files: Sequence[str] = (), bindings: Sequence[str] = (), *, model_dir: str,
          strategy: str | tf.distribute.Strategy = "default", tpu: str | None = None,
          allow_config_change: bool = False, callbacks: Sequence[Callback] = ()) -> Results:
  """Trains (or resumes) the run that the gin files and bindings describe, in `model_dir`.

  Args:
    gin_files: gin files, parsed in order (relative paths also resolve against the installed package).
    bindings: gin bindings applied after the files, e.g. 'Trainer.train_steps=100'.
    model_dir: where checkpoints, event files and the config go; an existing run there resumes.
    strategy: a `tf.distribute.Strategy`, or a name: default, one_device, mirrored,
      multi_worker_mirrored, tpu (see `trainer.runtime.strategy`).
    tpu: with strategy='tpu', the TPU to connect to.
    allow_config_change: resume although bindings that change the experiment differ.
    callbacks: `callback(step, metrics) -> bool | None`, after every validation evaluation.

  Raises:
    InvalidRunError: bad input (a gin file or binding, model_dir, the strategy, a checkpoint that does
      not fit); nothing was written.
    preemption.Preempted: SIGTERM/SIGINT; a checkpoint was written.
    recovery.NonFiniteError: a step went non-finite and the policy did not restore.
  """
  try:
    run, restored = _start(gin_files, bindings, model_dir=model_dir, strategy=strategy, tpu=tpu,
                           allow_config_change=allow_config_change)
  except (parsing.ConfigError, checkpointing.ResumeError, ValueError, TypeError) as error:
    raise InvalidRunError(str(error)) from error
  model_dir, is_chief = run.model_dir, run.is_chief
  watcher = _Callbacks(callbacks)
  metrics = driver.train(run, restored=restored,
                         train_actions=([parsing.RecordOperativeConfig(model_dir, run.writers)]
                                        if is_chief else []),
                         eval_actions=[watcher], stop_conditions=[lambda: watcher.stop_requested])
  return Results(metrics=metrics, model_dir=model_dir, step=int(run.step.numpy()), restored_from=restored,
                 stopped_by_callback=watcher.stop_requested, run=run)
