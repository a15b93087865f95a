"""The trials of `occam-tune`: which one runs next, how one trains and reports, and the workers.

Every trial trains in its own model dir `STUDY_DIR/trial-NNNN`, laid out like a sweep point
(`point.json`, `log.txt`, `done.json`; see `trainer.experiments.sweep`). A trial reports `--metric`
after every evaluation; a pruned trial stops there with a checkpoint and is marked PRUNED.

A trial whose worker died or stalled goes stale after two missed heartbeats (`--heartbeat`), is marked
FAIL and retried with its parameters in its own model dir, so it resumes from its last checkpoint; the
retry replaces it in the count. The retry waits while the model dir's lease (`trainer.runtime.lock`)
is held by a live process: a stalled worker that thaws finds its trial failed at its next report,
stops with a checkpoint and goes on with the next trial, and the retry resumes from that checkpoint.
A worker killed mid-trial is reaped at once (`workers.run_workers`), so its lease is free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from typing import Iterator

from trainer.experiments import optuna_shim, sweep, workers
from trainer.experiments.study_storage import Spec, load_study

LOCK_FILE = ".ask.lock"
EXIT_WORKER_FAILED, EXIT_PREEMPTED = 1, 75
STALE = "STALE"  # the state `run_trial` returns for a trial failed as stale while its worker stalled


def trial_dir(study_dir: str, number: int) -> str:
  """The model dir of trial `number`: `STUDY_DIR/trial-NNNN` (a retry uses its original's)."""
  return os.path.join(study_dir, f"trial-{number:04d}")


def counts(trials) -> tuple[int, int, bool]:
  """(finished, claimed, any waiting) of a study's trials, for the `--trials` budget.

  Finished: complete, pruned, or failed by the run itself (user attr `error`). A trial failed because
  its worker died (stale heartbeat) is not counted: its retry, waiting or running, is. Claimed adds the
  running and waiting ones.
  """
  from optuna.trial import TrialState
  finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                 or (t.state == TrialState.FAIL and "error" in t.user_attrs) for t in trials)
  active = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
  return finished, finished + len(active), any(t.state == TrialState.WAITING for t in active)


@contextlib.contextmanager
def _locked(study_dir: str) -> Iterator[None]:
  """Serializes counting and asking between the workers of one study dir, so `--trials` is exact.

  Machines sharing a study through `--storage` each have their own study dir, so each may start one
  trial more than the budget leaves when they ask at the same moment.
  """
  with open(os.path.join(study_dir, LOCK_FILE), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def next_trial(study, spec: Spec):
  """The next trial to run (a retry waiting first), None to wait for running ones, or "done"."""
  import optuna
  with _locked(spec.study_dir):
    optuna.storages.fail_stale_trials(study)
    finished, claimed, waiting = counts(study.get_trials(deepcopy=False))
    if finished >= spec.trials:
      return "done"
    if waiting or claimed < spec.trials:
      return study.ask()
    return None


def _train(spec: Spec, trial, point: sweep.Point, point_dir: str, report, worker: int):
  """`workers.train_point` of the trial, waiting while another live process holds the model dir's lease.

  That holder is the stalled worker of the trial this one retries (or a run the user started there):
  the lease is never taken from a live process, and a refusal is not the trial's result.
  """
  from trainer import api
  from trainer.runtime import lock
  waiting = False
  while True:
    try:
      return workers.train_point(spec.gin_files, list(spec.bindings) + point.gin_bindings(), point_dir,
                                 callbacks=[report])
    except api.InvalidRunError as error:
      if not isinstance(error.__cause__, lock.LockedError):
        raise
      if not waiting:
        print(f"tune: worker {worker}: trial {trial.number} waits for its model dir: "
              f"{str(error).split(': two runs')[0]}", file=sys.stderr, flush=True)
        waiting = True
      time.sleep(spec.heartbeat)


def run_trial(study, trial, spec: Spec, worker: int = 0) -> str:
  """Trains `trial` in process, reporting `spec.metric` at every evaluation; tells the study. Its state.

  A retried trial trains in the model dir of the trial it retries, so it resumes from its checkpoint.
  A run that fails by itself (non-finite, bad config) is FAIL with user attr `error`; preemption
  propagates with the trial left RUNNING, to be retried after its heartbeat goes stale. A trial that
  went stale while this worker was stalled (stopped, swapped out) is its retry's now: the run stops at
  its next report with a checkpoint, and `STALE` is returned without telling the study anything.
  """
  import optuna

  from trainer import api
  from trainer.loop import recovery
  values = {d.key: d.suggest(trial) for d in spec.space}
  point = sweep.Point(tuple(values.items()))
  original = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(optuna_shim.frozen(trial))
  point_dir = trial_dir(spec.study_dir, trial.number if original is None else original)
  argv = sweep.command(sys.executable, spec.gin_files, spec.bindings, point, point_dir)
  sweep.write_point(point_dir, point, argv, trial=trial.number, study=spec.study)
  trial.set_user_attr("model_dir", point_dir)

  def report(step: int, metrics) -> bool:
    if spec.metric not in metrics:
      return False
    try:
      trial.report(float(metrics[spec.metric]), step)
    except optuna.exceptions.UpdateFinishedTrialError:
      return True  # failed as stale: stop now, with a checkpoint its retry resumes from
    return trial.should_prune()

  def stale() -> bool:
    return optuna_shim.frozen(trial).state.is_finished()

  started = time.perf_counter()
  with optuna_shim.heartbeat(trial):
    try:
      results = _train(spec, trial, point, point_dir, report, worker)
    except (api.InvalidRunError, recovery.NonFiniteError) as error:
      if stale():
        return STALE
      trial.set_user_attr("error", str(error))
      study.tell(trial, state=optuna.trial.TrialState.FAIL)
      return "FAIL"
  if stale():
    return STALE
  trial.set_user_attr("step", results.step)
  if results.stopped_by_callback:
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    state, value = "PRUNED", optuna_shim.frozen(trial).value
  else:
    value = float(results.metrics[spec.metric])
    study.tell(trial, value)
    state = "COMPLETE"
  sweep.mark_done(point_dir, time.perf_counter() - started, state=state, value=value, step=results.step,
                  trial=trial.number, restored_from=results.restored_from)
  return state


def work(spec: Spec, worker: int = 0) -> int:
  """One worker: runs trials of the study until it has `spec.trials` finished ones. Its exit code."""
  from trainer.runtime import preemption
  study = load_study(spec, worker)
  print(f"tune: worker {worker}: joined study {study.study_name!r} (pid {os.getpid()})", file=sys.stderr,
        flush=True)
  while True:
    trial = next_trial(study, spec)
    if trial == "done":
      return 0
    if trial is None:  # Every remaining trial is running elsewhere: wait for them (or their staleness).
      time.sleep(spec.heartbeat)
      continue
    try:
      state = run_trial(study, trial, spec, worker)
    except (preemption.Preempted, preemption.Interrupted) as stop:  # a signal: the command's 75
      print(f"tune: worker {worker}: {stop}", file=sys.stderr, flush=True)
      return EXIT_PREEMPTED
    if state == STALE:
      print(f"tune: worker {worker}: trial {trial.number} was failed as stale (this worker stalled for "
            f"more than two heartbeats, {2 * spec.heartbeat} s); its retry goes on from its checkpoint",
            file=sys.stderr, flush=True)
      continue
    error = trial.user_attrs.get("error", "")
    print(f"tune: worker {worker}: trial {trial.number} {state} {dict(trial.params)} {error}".rstrip(),
          file=sys.stderr, flush=True)


def run_workers(spec: Spec, parallel: int) -> int:
  """Runs `parallel` workers (`workers.run_workers`: this process and `parallel - 1` spawned ones).
  Returns the worst exit code."""
  codes = workers.run_workers(work, (spec,), parallel, name="occam-tune")
  if EXIT_PREEMPTED in codes:
    return EXIT_PREEMPTED
  return EXIT_WORKER_FAILED if any(codes) else 0
