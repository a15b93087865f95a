"""Trains a built `Run`: reports its start, wires runners, policies and actions into a Controller.

This is the one place that decides which behaviour a run has around the bare cadence: non-finite
recovery, early stopping with the best model, preemption, the start-of-run report and HParams, plus
whatever actions the caller adds (the operative config, per-evaluation callbacks). At the end, the
chief writes `model_dir/results.json` (`results_record`, schema in docs/COMMAND_LINE.md) and logs the
same results as the final console block. Rerunning a finished run trains nothing and leaves its record
as it is (the run's metrics and wall time, not the rerun's evaluation alone).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from typing import Callable, Mapping, Sequence

import tensorflow as tf
from absl import logging

from trainer import __version__
from trainer.common import files
from trainer.data import diagnosis
from trainer.loop import runners, schedules
from trainer.loop.averaged_evaluation import EvaluateAverage
from trainer.loop.builder import Checkpointers, Run
from trainer.loop.controller import Action, Controller
from trainer.loop.early_stopping import BEST_PREFIX, KeepBest
from trainer.loop.recovery import NonFiniteRecovery
from trainer.metrics import dashboard, tags
from trainer.regularization import terms as terms_lib
from trainer.runtime import checkpointing, devices
from trainer.runtime.preemption import PreemptionWatcher

RESULTS_FILE = "results.json"
RESULTS_SCHEMA = 1  # bumped when a key of results.json changes meaning or goes away


def train(run: Run, checkpointers: Checkpointers, *, restored: str | None,
          train_actions: Sequence[Action] = (), eval_actions: Sequence[Action] = (),
          stop_conditions: Sequence[Callable[[], bool]] = ()) -> dict[str, float]:
  """Trains `run` (restored from `restored`, None for a fresh start) to its `train_steps`.

  Returns the last loop's metrics and the final evaluation, which the chief also writes to
  `model_dir/results.json` and logs; a finished run that trains nothing returns its recorded metrics.
  Raises `Preempted` (`Interrupted`) after a checkpoint on SIGTERM (SIGINT), `NonFiniteError` when
  a step diverged and the policy does not restore (no results.json then), `diagnosis.InputError`
  naming the file and record when a stream hits bad data, and `WriteError` naming the directory when a
  checkpoint or another file of the run cannot be written (a full disk). `checkpointers` are closed at
  the end.
  """
  started = time.monotonic()
  config = run.config
  trainer, evaluator = runners.train_runner(run), runners.eval_runner(run)
  recovery = NonFiniteRecovery(policy=config.on_nonfinite, max_restores=config.max_restores,
                               lr_factor=config.restore_lr_factor, checkpointer=checkpointers.latest,
                               learning_rate_scale=run.schedule.scale,
                               clear_flags=trainer.clear_nonfinite_flags)
  own_eval_actions, own_stop_conditions = [], []
  keep_best = None
  if run.early_stopping is not None:
    keep_best = KeepBest(run.early_stopping, checkpointer=checkpointers.best, model=run.model,
                         feature_shape=run.input_shape, is_chief=run.is_chief)
    own_eval_actions.append(keep_best)
    own_stop_conditions.append(lambda: run.early_stopping.stopped)
  averages = [EvaluateAverage(state, evaluate=evaluator.evaluate, writers=run.writers,
                              model_dir=run.model_dir, feature_shape=run.input_shape, is_chief=run.is_chief)
              for state in run.averages]
  own_eval_actions += averages
  controller = Controller(
      trainer=trainer, evaluator=evaluator, writers=run.writers, save_checkpoint=checkpointers.latest.save,
      train_steps=config.train_steps, steps_per_loop=config.steps_per_loop,
      eval_every=config.eval_every, checkpoint_every=config.checkpoint_every, on_nonfinite=recovery,
      preemption=PreemptionWatcher(run.strategy, save=lambda: _save_now(run, checkpointers)),
      train_actions=train_actions,
      eval_actions=[*own_eval_actions, *eval_actions],
      stop_conditions=[*own_stop_conditions, *stop_conditions])
  try:
    report_start(run, trainer.step, restored)
    recovery.on_start(trainer.step, restored)
    first_step = trainer.step
    metrics = controller.run()
    if keep_best is not None:  # the best weights' test metrics, next to the last weights'
      best = keep_best.finish(evaluator.evaluate)
      if best:
        run.writers.write_scalars(tags.EVAL, int(run.early_stopping.best_step.numpy()), best)
        metrics.update(best)
    for average in averages:  # each weight average's eval/* and test/*, next to the raw weights'
      metrics.update(average.finish(trainer.step))
    path = os.path.join(run.model_dir, RESULTS_FILE)
    record = finished_record(path, step=first_step) if trainer.step == first_step else None
    if record is not None:  # a rerun of a finished run: its record stays whole
      metrics = {name: math.nan if value is None else value for name, value in record["metrics"].items()}
    else:
      record = results_record(run, metrics, restored=restored, wall_time_sec=time.monotonic() - started)
      if run.is_chief:
        files.write_json(path, record)
    if run.is_chief:
      report_end(record)
    return metrics
  except (tf.errors.OpError, OSError, ValueError) as error:
    explained = _explained(run, checkpointers, error)
    if explained is None:
      raise
    raise explained from error
  finally:
    run.writers.flush()
    checkpointers.close()


def _save_now(run: Run, checkpointers: Checkpointers) -> int:
  """Writes the latest checkpoint at the current step (where the workers agreed to stop); returns the step."""
  step = int(run.step.numpy())
  checkpointers.latest.save(step)
  return step


def _explained(run: Run, checkpointers: Checkpointers, error: Exception) -> Exception | None:
  """Bad data deep in a stream (`diagnosis.InputError`) or a failed write under model_dir (`WriteError`),
  as one line naming the file or directory; None for any other error."""
  found = diagnosis.locate(run.splits, error)
  if found is not None:
    latest = checkpointers.latest.candidates()
    return diagnosis.InputError(
        f"{found}. Training stopped; the last checkpoint ({latest[0] if latest else 'none yet'}) is intact: "
        "fix the data and rerun the same command to resume (with --allow_data_change if the fix changed a "
        "file)")
  path = re.search(rf"{re.escape(run.model_dir)}[^;\s]*", getattr(error, "filename", None) or str(error))
  if isinstance(error, checkpointing.WRITE_ERRORS) and path:
    return checkpointing.WriteError(
        f"cannot write {path.group(0)} in --model_dir={run.model_dir}: {checkpointing.write_failure(error)}; "
        "the checkpoints are intact: free space and rerun the same command to resume")
  return None


def finished_record(path: str, *, step: int) -> dict | None:
  """The record at `path` if it is a readable results.json of this schema written at `step`, else None
  (none yet, or a run killed between its last checkpoint and its record: the caller writes a new one)."""
  try:
    with tf.io.gfile.GFile(path) as file:
      record = json.load(file)
  except (OSError, tf.errors.OpError, ValueError):
    return None
  if not isinstance(record, dict) or record.get("schema") != RESULTS_SCHEMA or record.get("step") != step:
    return None
  return record if isinstance(record.get("metrics"), dict) else None


def report_start(run: Run, step: int, restored: str | None) -> None:
  """Logs the decisions a user must trust (data, model size, each term's variables) and writes HParams."""
  logging.info("data: %s", run.splits.description)
  logging.info("model: %s, %d trainable parameters", run.model.name,
               sum(int(tf.size(v)) for v in run.model.trainable_variables))
  logging.info("%s", devices.describe_jit_compile(run.config.jit_compile, run.strategy))
  logging.info("%s", devices.describe_precision(run.config.mixed_precision, run.strategy))
  for term in run.terms:
    logging.info("regularizer %s", term.describe())  # `l2: L2(scale=...) on ...`: it starts with the name
    run.writers.write_text(tags.TRAIN, step, f"regularizers/{term.name}", term.describe())
  ended = schedules.ended_early_warning(run.schedule.schedule, run.config.train_steps)
  if ended:
    logging.warning("%s (Trainer.train_steps=%d)", ended, run.config.train_steps)
  overlap = terms_lib.overlap_warning(run.terms, run.model)
  if overlap:
    logging.warning("%s", overlap)
  if restored:
    logging.info("resumed from %s at step %d", restored, step)
  else:
    logging.info("starting from scratch at step %d", step)
  if run.early_stopping is not None and run.early_stopping.stopped:
    logging.info("this run already stopped early (best at step %d); nothing left to train",
                 int(run.early_stopping.best_step.numpy()))
  if not restored:  # the dashboards' configuration, once per run
    run.writers.write_with(tags.TRAIN, dashboard.write_layout)
    run.writers.write_with(tags.EVAL, lambda: dashboard.write_hparams_config(
        run.hparams, classification=run.splits.num_classes is not None))
  run.writers.write_hparams(run.hparams, trial_id=os.path.basename(os.path.normpath(run.model_dir)),
                            step=step)


def results_record(run: Run, metrics: Mapping[str, float], *, restored: str | None,
                   wall_time_sec: float) -> dict:
  """The content of `model_dir/results.json`: what a finished run reports, in one documented record.

  Non-finite values become None (JSON has no NaN). `wall_time_sec` covers this invocation only (from
  the driver's start to the final evaluation); a resumed run reports its own part.
  """
  def number(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None

  stopper = run.early_stopping
  best = None
  if stopper is not None and int(stopper.best_step.numpy()) >= 0:
    best = {"metric": stopper.metric, "step": int(stopper.best_step.numpy()),
            "value": number(stopper.best_value), "stopped_early": stopper.stopped,
            "test": {name.rsplit("/", 1)[1]: number(value) for name, value in sorted(metrics.items())
                     if name.startswith(BEST_PREFIX + "test/")}}
  return {
      "schema": RESULTS_SCHEMA,
      "version": __version__,
      "model_dir": run.model_dir,
      "restored_from": restored,
      "step": int(run.step.numpy()),
      "train_steps": run.config.train_steps,
      "wall_time_sec": round(wall_time_sec, 3),
      "generalization_gap": {name.split("/", 1)[1]: number(metrics[name])
                             for name in ("gap/loss", "gap/accuracy") if name in metrics},
      "early_stopping": best,
      "metrics": {name: number(value) for name, value in sorted(metrics.items())},
  }


def report_end(record: Mapping) -> None:
  """The final console block: the final metrics, the gap, the best step/value, wall time, model_dir."""
  metrics = record["metrics"]
  shown = [name for name in sorted(metrics) if name.split("/")[0] in ("train", "eval", "test")]
  logging.info("final | step %d | %s", record["step"], " | ".join(
      f"{name}: {_fmt(metrics[name])}" for name in shown))
  gap = record["generalization_gap"]
  best = record["early_stopping"]
  parts = [f"generalization gap: {', '.join(f'{k} {_fmt(v)}' for k, v in sorted(gap.items())) or 'n/a'}",
           (f"best {best['metric']}: {_fmt(best['value'])} at step {best['step']}"
            + "".join(f", its test/{k}: {_fmt(v)}" for k, v in sorted(best["test"].items()))
            if best else "best: n/a (no early stopping)"),
           f"wall time: {record['wall_time_sec']:.1f}s"]
  logging.info("final | %s", " | ".join(parts))
  logging.info("final | results in %s", os.path.join(record["model_dir"], RESULTS_FILE))


def _fmt(value: float | None) -> str:
  return "n/a" if value is None else f"{value:.4g}"
