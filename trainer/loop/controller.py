"""The host side of training: when to train, evaluate, checkpoint, summarize, and stop.

`Controller.run` drives a built `Trainer` in host loops of up to `steps_per_loop` steps. Everything
the host does happens at loop boundaries: reading metrics, writing summaries, evaluating,
checkpointing, early stopping, and reacting to a preemption signal or a non-finite step. Inside a
loop the device runs uninterrupted.
"""

from __future__ import annotations

import json
import os
import time
from typing import Sequence

import tensorflow as tf
from absl import logging

from trainer.config import parsing as config
from trainer.data import pipeline as input_pipeline
from trainer.regularization import terms as regularizers_lib
from trainer.runtime.export import export_saved_model
from trainer.runtime.preemption import Preempted, PreemptionWatcher

EXIT_NONFINITE = 3
ON_NONFINITE = ("stop", "restore")


class NonFiniteError(RuntimeError):
  """A loss, penalty or gradient went non-finite; the message names which, and at which step."""


class Controller:
  """Runs one `Trainer` from its restored step to `train_steps` (or an early stop)."""

  def __init__(self, trainer):
    self.trainer = trainer
    self._restores = 0
    self._wrote_config = False

  def run(self) -> dict[str, float]:
    """Trains, evaluates and checkpoints; returns the last loop's metrics plus the final evaluation.

    Raises `Preempted` after checkpointing when a SIGTERM/SIGINT arrived, and `NonFiniteError` when a
    step went non-finite (and the policy does not restore), leaving the last good checkpoint as is.
    """
    t = self.trainer
    step = int(t.step.numpy())
    self._describe_start(step)
    t.monitor.on_start(t.writers)
    eval_datasets = {"eval": self._eval_dataset(t.splits.validation), "test": self._eval_dataset(t.splits.test)}
    final: dict[str, float] = {}
    try:
      with PreemptionWatcher(t.strategy) as preemption:
        if t.on_nonfinite == "restore" and t.restored is None:
          t.checkpointer.save(step)  # so that even a divergence before the first checkpoint can restore
        iterator = self.train_iterator(step)
        while step < t.train_steps and not self._stopped_early():
          start = step
          scalars = self._train_loop(iterator, step)
          step = int(t.step.numpy())
          if scalars is None:  # A non-finite step was undone by restoring the last good checkpoint.
            iterator = self.train_iterator(step)
            continue
          stop = self._after_loop(start, step, scalars, eval_datasets)
          preempted = preemption.should_stop()
          if step % t.checkpoint_every == 0 or step == t.train_steps or stop or preempted:
            t.checkpointer.save(step)
          _log_loop(step, t.train_steps, scalars)
          final = scalars
          if preempted:
            raise Preempted(step)
      # The last loop evaluated the validation split already; a run resumed at its end has not.
      final.update(self._evaluate(step, eval_datasets, ["test"] if "eval/loss" in final else ["eval", "test"]))
    finally:
      t.writers.flush()
      t.checkpointer.close()
      t.best_checkpointer.close()
    return final

  # --- Input -------------------------------------------------------------------------------------

  def train_iterator(self, start_step: int):
    """The distributed training stream from `start_step` on (see `input_pipeline.train_dataset`)."""
    t = self.trainer
    return iter(t.strategy.distribute_datasets_from_function(
        lambda context: input_pipeline.train_dataset(t.splits.train, global_batch_size=t.batch_size, seed=t.seed,
                                                     start_step=start_step, input_context=context)))

  def _eval_dataset(self, split) -> tf.distribute.DistributedDataset:
    t = self.trainer
    return t.strategy.distribute_datasets_from_function(
        lambda context: input_pipeline.eval_dataset(split, global_batch_size=t.eval_batch_size, input_context=context))

  # --- One loop ------------------------------------------------------------------------------------

  def _next_boundary(self, step: int) -> int:
    """The next step at which the host must act: loop end, evaluation, checkpoint or the last step."""
    t = self.trainer
    return min(step + t.steps_per_loop, t.train_steps, (step // t.eval_every + 1) * t.eval_every,
               (step // t.checkpoint_every + 1) * t.checkpoint_every)

  def _train_loop(self, iterator, step: int) -> dict[str, float] | None:
    """Runs one host loop; returns its scalars, or None if it hit a non-finite step and restored."""
    t = self.trainer
    num_steps = self._next_boundary(step) - step
    t.train_program.metrics.reset()
    started = time.perf_counter()
    first_bad = int(t.train_program.loop(iterator, tf.constant(num_steps, tf.int32)))
    seconds = time.perf_counter() - started
    if first_bad >= 0:
      self._recover(step + first_bad + 1, t.train_program.nonfinite_report())
      return None
    return self._loop_scalars(step + num_steps, num_steps, seconds)

  def _loop_scalars(self, step: int, num_steps: int, seconds: float) -> dict[str, float]:
    t = self.trainer
    scalars = t.train_program.metrics.results()
    learning_rate = t.schedule(step - 1)
    scalars["optimizer/learning_rate"] = float(learning_rate)
    decays = [float(term.effective_decay(learning_rate, t.schedule.base_learning_rate))
              for term in t.terms if isinstance(term, regularizers_lib.UpdateTerm)]
    if any(decays):
      scalars["optimizer/weight_decay"] = sum(decays)
    scalars["perf/steps_per_sec"] = num_steps / seconds
    scalars["perf/examples_per_sec"] = num_steps * t.batch_size / seconds
    return scalars

  def _after_loop(self, start: int, step: int, scalars: dict[str, float], eval_datasets) -> bool:
    """Summaries, the operative config, evaluation and early stopping; True when training should stop."""
    t = self.trainer
    scalars.update(t.monitor.after_loop(start, step, t.writers))
    t.writers.write_scalars("train", step, scalars)
    if not self._wrote_config and t.is_chief:
      t.writers.write_text("train", step, "config/operative_gin", config.write_operative_config(t.model_dir))
      self._wrote_config = True
    if step % t.eval_every and step != t.train_steps:
      return False
    scalars.update(self._evaluate(step, eval_datasets, ["eval"]))
    return self._early_stop(step, scalars)

  def _evaluate(self, step: int, datasets, names: Sequence[str]) -> dict[str, float]:
    t = self.trainer
    scalars = {}
    for name in names:
      results = t.eval_program.evaluate(datasets[name])
      scalars.update({f"{name}/{metric}": value for metric, value in results.items()})
    if "eval" in names:
      scalars.update(t.monitor.after_eval(scalars))
    t.writers.write_scalars("eval", step, scalars)
    return scalars

  # --- Early stopping and the best model ------------------------------------------------------------

  def _stopped_early(self) -> bool:
    stopper = self.trainer.early_stopping
    return stopper is not None and int(stopper.waited.numpy()) >= stopper.patience

  def _early_stop(self, step: int, scalars: dict[str, float]) -> bool:
    t = self.trainer
    if t.early_stopping is None:
      return False
    decision = t.early_stopping.update(step, scalars)
    if decision.improved:
      self._save_best(step, scalars[t.early_stopping.metric])
    if decision.stop:
      logging.info("early stopping at step %d: %s did not improve by more than %g in %d evaluations "
                   "(best %.4g at step %d)", step, t.early_stopping.metric, t.early_stopping.min_delta,
                   t.early_stopping.patience, t.early_stopping.best_value, int(t.early_stopping.best_step.numpy()))
    return decision.stop

  def _save_best(self, step: int, value: float) -> None:
    """Keeps the best weights: a checkpoint, a SavedModel for inference, and best.json (chief only)."""
    t = self.trainer
    t.best_checkpointer.save(step)
    if not t.is_chief:
      return
    best_dir = t.best_checkpointer.directory
    export_saved_model(t.model, os.path.join(best_dir, "saved_model"), t.splits.train.features.shape[1:])
    record = {"step": step, "metric": t.early_stopping.metric, "value": value}
    temporary = os.path.join(best_dir, "best.json.tmp")
    with open(temporary, "w") as f:
      json.dump(record, f)
    os.replace(temporary, os.path.join(best_dir, "best.json"))

  # --- Non-finite steps -----------------------------------------------------------------------------

  def _recover(self, step: int, nonfinite: Sequence[str]) -> None:
    """Raises `NonFiniteError`, or (policy 'restore') reloads the last good checkpoint at a lower rate."""
    t = self.trainer
    what = f"non-finite {', '.join(nonfinite)} at step {step}"
    latest = (t.checkpointer.candidates() or [None])[0]
    if t.on_nonfinite == "stop" or self._restores >= t.max_restores or latest is None:
      reason = (f"after {self._restores} restores" if t.on_nonfinite == "restore" and latest else
                "Trainer.on_nonfinite='stop'" if t.on_nonfinite == "stop" else "no checkpoint to restore")
      raise NonFiniteError(f"{what} ({reason}). Training stopped; the last good checkpoint "
                           f"({latest or 'none yet'}) is untouched. Lower the learning rate, check the data, "
                           "or set Trainer.on_nonfinite='restore'.")
    restored = t.checkpointer.restore_latest()
    t.schedule.scale.assign(t.schedule.scale * t.restore_lr_factor)
    t.train_program.nonfinite.assign(tf.zeros_like(t.train_program.nonfinite))
    self._restores += 1
    logging.warning("%s: restored %s and scaled the learning rate by %g (restore %d of %d)", what, restored,
                    t.restore_lr_factor, self._restores, t.max_restores)

  # --- Logging --------------------------------------------------------------------------------------

  def _describe_start(self, step: int) -> None:
    t = self.trainer
    logging.info("data: %s", t.splits.description)
    logging.info("model: %s, %d trainable parameters", t.model.name,
                 sum(int(tf.size(v)) for v in t.model.trainable_variables))
    for term in t.terms:
      logging.info("regularizer %s: %s", term.name, term.describe())
      t.writers.write_text("train", step, f"regularizers/{term.name}", term.describe())
    overlap = regularizers_lib.overlap_warning(t.terms, t.model)
    if overlap:
      logging.warning("%s", overlap)
    if t.restored:
      logging.info("resumed from %s at step %d", t.restored, step)
    else:
      logging.info("starting from scratch at step %d", step)
    if self._stopped_early():
      logging.info("this run already stopped early (best at step %d); nothing left to train",
                   int(t.early_stopping.best_step.numpy()))


def _log_loop(step: int, train_steps: int, scalars: dict[str, float]) -> None:
  """One greppable line per loop: `train | step: 500/1000 | loss: 0.31 | ... | steps/sec: 41.2 | eta: 12s`."""
  keys = ["train/loss", "train/data_loss", "train/accuracy", "eval/loss", "eval/accuracy"]
  parts = [f"step: {step}/{train_steps}"]
  parts += [f"{key.replace('train/', '')}: {scalars[key]:.4g}" for key in keys if key in scalars]
  rate = scalars["perf/steps_per_sec"]
  parts += [f"steps/sec: {rate:.1f}", f"eta: {(train_steps - step) / rate:.0f}s"]
  logging.info("train | %s", " | ".join(parts))
