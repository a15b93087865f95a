"""Trains a built `Run`: reports its start, wires runners, policies and actions into a Controller.

This is the one place that decides which behaviour a run has around the bare cadence: non-finite
recovery, early stopping with the best model, preemption, the start-of-run report and HParams, plus
whatever actions the caller adds (the operative config, per-evaluation callbacks).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import tensorflow as tf
from absl import logging

from trainer.loop.builder import Run
from trainer.loop.controller import Action, Controller
from trainer.loop.early_stopping import KeepBest
from trainer.loop.recovery import NonFiniteRecovery
from trainer.loop.runners import EvalRunner, TrainRunner
from trainer.metrics import tags
from trainer.regularization import terms as terms_lib
from trainer.runtime.preemption import PreemptionWatcher


def train(run: Run, *, restored: str | None, train_actions: Sequence[Action] = (),
          eval_actions: Sequence[Action] = (),
          stop_conditions: Sequence[Callable[[], bool]] = ()) -> dict[str, float]:
  """Trains `run` (restored from `restored`, None for a fresh start) to its `train_steps`.

  Returns the last loop's metrics and the final evaluation. Raises `Preempted` after a checkpoint on
  SIGTERM/SIGINT and `NonFiniteError` when a step diverged and the policy does not restore.
  """
  settings = run.settings
  trainer, evaluator = TrainRunner(run), EvalRunner(run)
  recovery = NonFiniteRecovery(policy=settings.on_nonfinite, max_restores=settings.max_restores,
                               lr_factor=settings.restore_lr_factor, checkpointer=run.checkpointer,
                               learning_rate_scale=run.schedule.scale,
                               clear_flags=trainer.clear_nonfinite_flags)
  own_eval_actions, own_stop_conditions = [], []
  if run.early_stopping is not None:
    own_eval_actions.append(KeepBest(run.early_stopping, checkpointer=run.best_checkpointer, model=run.model,
                                     feature_shape=run.splits.train.features.shape[1:],
                                     is_chief=run.is_chief))
    own_stop_conditions.append(lambda: run.early_stopping.stopped)
  controller = Controller(
      trainer=trainer, evaluator=evaluator, writers=run.writers, save_checkpoint=run.checkpointer.save,
      train_steps=settings.train_steps, steps_per_loop=settings.steps_per_loop,
      eval_every=settings.eval_every, checkpoint_every=settings.checkpoint_every, on_nonfinite=recovery,
      preemption=PreemptionWatcher(run.strategy), train_actions=train_actions,
      eval_actions=[*own_eval_actions, *eval_actions],
      stop_conditions=[*own_stop_conditions, *stop_conditions])
  try:
    report_start(run, trainer.step, restored)
    recovery.on_start(trainer.step, restored)
    return controller.run()
  finally:
    run.writers.flush()
    run.checkpointer.close()
    run.best_checkpointer.close()


def report_start(run: Run, step: int, restored: str | None) -> None:
  """Logs the decisions a user must trust (data, model size, each term's variables) and writes HParams."""
  logging.info("data: %s", run.splits.description)
  logging.info("model: %s, %d trainable parameters", run.model.name,
               sum(int(tf.size(v)) for v in run.model.trainable_variables))
  for term in run.terms:
    logging.info("regularizer %s: %s", term.name, term.describe())
    run.writers.write_text(tags.TRAIN, step, f"regularizers/{term.name}", term.describe())
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
  run.writers.write_hparams(run.hparams, trial_id=os.path.basename(os.path.normpath(run.model_dir)))
