r"""Hyperparameter search with Optuna: each trial is an Occam run, tuned through gin bindings.

    occam-tune --gin_file=gin_configs/experiments/claim1_l2_u_curve.gin \
        --space 'L2.scale=loguniform(1e-6, 1e-1)' --space 'Trainer.learning_rate=loguniform(1e-4, 1e-2)' \
        --metric=eval/accuracy --trials=40 --parallel=2 --pruner=median --study_dir=sweeps/l2_tpe

The search space: `KEY=uniform(LOW, HIGH)`, `KEY=loguniform(LOW, HIGH)`, `KEY=int(LOW, HIGH)` (both
ends included) or `KEY=choice(V1, V2, ...)` (gin values, exactly as typed), from `--space` or one per
line of `--space_file` (`#` starts a comment). It is checked by gin, ends and choices included, before
any trial starts. The direction (maximize or minimize `--metric`) comes from the tag registry.

Every trial trains in its own model dir `STUDY_DIR/trial-NNNN`, laid out like a sweep point
(`point.json`, `log.txt`, `done.json`; see `trainer.experiments.sweep`), so `occam-report STUDY_DIR`,
`trainer.experiments.results` and TensorBoard's HParams dashboard (`--logdir STUDY_DIR`) read a study
as they read a sweep. A trial reports `--metric` after every evaluation; a pruned trial stops there
with a checkpoint and is marked PRUNED. At the end the study's own views (optimization history,
parameter importances, slice plot) are written to STUDY_DIR as PNGs.

Trials run in `--parallel` long-lived worker processes (this one and `--parallel - 1` spawned ones;
`trainer.experiments.workers`, shared with `occam-sweep`):
TensorFlow is imported once per worker, and `trainer.train` resets gin, the Keras precision policy and
every seed for each run (the worker also clears the Keras session), so a trial's result does not depend
on what the worker ran before. The study lives in `--storage`, by default SQLite in
`STUDY_DIR/study.db`: an RDB storage because Optuna's heartbeats (the detection of trials whose worker
died) need one (its journal file storage has none), SQLite because it is one file and no server.
Several machines share one study through any RDB URL (`--storage=postgresql+psycopg2://user@host/db
--study=NAME`). Rerunning the command continues the study until `--trials` trials have finished. A
trial whose worker died goes stale after two missed heartbeats (`--heartbeat`), is marked FAIL and
retried with its parameters in its own model dir, so it resumes from its last checkpoint; the retry
replaces it in the count.

Exit codes: 0 the study has its trials, 1 a worker failed, 2 bad input, 75 preempted (rerun to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import math
import os
import re
import sys
import time
import warnings
from typing import Iterator, Sequence

import numpy as np

from trainer.experiments import plots, sweep, workers
from trainer.metrics import tags

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("none", "median", "halving", "hyperband", "threshold:VALUE")
KINDS = ("uniform", "loguniform", "int", "choice")
DB_FILE, LOCK_FILE = "study.db", ".ask.lock"
PLOTS = plots.STUDY_VIEWS
EXIT_WORKER_FAILED, EXIT_PREEMPTED = 1, 75
MAX_RETRIES = 3  # A trial whose worker keeps dying (e.g. out of memory) is not retried forever.


class SpaceError(ValueError):
  """A `--space` entry, file or option that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One searched binding: `kind` is uniform, loguniform, int (bounds `low`, `high`) or choice."""
  key: str
  kind: str
  low: float = math.nan
  high: float = math.nan
  choices: tuple[str, ...] = ()

  def suggest(self, trial) -> str:
    """Asks `trial` (an `optuna.Trial`) for this dimension's value; returns it as gin text."""
    if self.kind == "choice":
      return trial.suggest_categorical(self.key, list(self.choices))
    if self.kind == "int":
      return str(trial.suggest_int(self.key, int(self.low), int(self.high)))
    return repr(trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform"))

  def extremes(self) -> list[str]:
    """The gin texts validation tries: both ends of a range, every choice."""
    if self.kind == "choice":
      return list(self.choices)
    if self.kind == "int":
      return [str(int(self.low)), str(int(self.high))]
    return [repr(self.low), repr(self.high)]

  def grid(self, size: int) -> list:
    """`size` values spread over the range (log-spaced for loguniform), or the choices: the grid sampler's."""
    if self.kind == "choice":
      return list(self.choices)
    if self.kind == "int":
      return sorted({int(round(v)) for v in np.linspace(self.low, self.high, size)})
    spread = np.geomspace if self.kind == "loguniform" else np.linspace
    return [float(v) for v in spread(self.low, self.high, size)]


def parse_dimension(entry: str) -> Dimension:
  """'L2.scale=loguniform(1e-6, 1e-1)' -> Dimension; SpaceError naming the entry if it is unusable."""
  match = re.fullmatch(r"\s*([^=\s]+)\s*=\s*(\w+)\s*\((.*)\)\s*", entry, flags=re.DOTALL)
  if not match or match.group(2) not in KINDS:
    raise SpaceError(f"--space {entry!r}: expected KEY=KIND(...) with KIND one of {list(KINDS)}, "
                     "e.g. 'L2.scale=loguniform(1e-6, 1e-1)' or 'MLP.hidden_sizes=choice((64,), (128,))'")
  key, kind, values = match.group(1), match.group(2), sweep.split_top_level(match.group(3))
  if kind == "choice":
    if not values or len(set(values)) != len(values):
      raise SpaceError(f"--space {entry!r}: choice needs distinct values, got {values}")
    return Dimension(key, kind, choices=tuple(values))
  try:
    low, high = (int(v) if kind == "int" else float(v) for v in values)
  except ValueError as error:
    number = "integers" if kind == "int" else "numbers"
    raise SpaceError(f"--space {entry!r}: {kind} needs two {number} (LOW, HIGH), got {values}") from error
  if not low < high:
    raise SpaceError(f"--space {entry!r}: the range is empty (LOW={low} must be below HIGH={high})")
  if kind == "loguniform" and low <= 0:
    raise SpaceError(f"--space {entry!r}: a log range needs positive bounds, LOW={low}")
  return Dimension(key, kind, float(low), float(high))


def parse_space(entries: Sequence[str], space_file: str | None = None) -> list[Dimension]:
  """The dimensions of `--space` entries and the lines of `space_file`, each key at most once."""
  entries = list(entries)
  if space_file:
    try:
      with open(space_file) as file:
        entries += [line.split("#", 1)[0].strip() for line in file]
    except OSError as error:
      raise SpaceError(f"--space_file={space_file}: {error.strerror}") from error
  space = [parse_dimension(entry) for entry in entries if entry]
  if not space:
    raise SpaceError("no search space: give --space KEY=KIND(...) or --space_file")
  keys = [d.key for d in space]
  repeated = sorted({key for key in keys if keys.count(key) > 1})
  if repeated:
    raise SpaceError(f"--space: keys given more than once: {repeated}")
  return space


def validate(gin_files: Sequence[str], bindings: Sequence[str], space: Sequence[Dimension]) -> None:
  """Has gin parse the config with every end and choice of the space (`sweep.validate`'s check)."""
  grid = [(d.key, d.extremes()) for d in space]
  first = sweep.Point(tuple((key, values[0]) for key, values in grid))
  try:
    sweep.validate(gin_files, bindings, grid, [first], flag="--space")
  except sweep.GridError as error:
    raise SpaceError(str(error)) from error


def direction(metric: str) -> str:
  """'maximize' or 'minimize' `metric`, from the tag registry; SpaceError if it has no better direction."""
  try:
    better = tags.find(metric).higher_is_better
  except tags.UnknownTagError as error:
    raise SpaceError(f"--metric: {error}") from error
  if better is None:
    raise SpaceError(f"--metric={metric} has no better direction (trainer/metrics/tags.py)")
  return "maximize" if better else "minimize"


def parse_pruner(text: str) -> tuple[str, float | None]:
  """'median' -> ('median', None); 'threshold:0.5' -> ('threshold', 0.5); SpaceError otherwise."""
  name, _, value = text.partition(":")
  if name == "threshold":
    try:
      return name, float(value)
    except ValueError as error:
      raise SpaceError(f"--pruner={text}: expected threshold:VALUE, e.g. threshold:0.5") from error
  if name not in PRUNERS or value:
    raise SpaceError(f"--pruner={text}: expected one of {list(PRUNERS)}")
  return name, None


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything a worker process needs (picklable): the experiment, the space, the study."""
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  space: tuple[Dimension, ...]
  metric: str
  direction: str
  study_dir: str
  storage: str
  study: str
  trials: int
  sampler: str = "tpe"
  pruner: str = "none"
  startup_trials: int = 5
  grid_size: int = 5
  seed: int = 0
  heartbeat: int = 10

  def grid_space(self) -> dict[str, list]:
    return {d.key: d.grid(self.grid_size) for d in self.space}


def make_sampler(spec: Spec, worker: int, done: int = 0):
  """The Optuna sampler of `spec`, seeded by `--seed`, the worker and the trials the study has (`done`).

  Each worker, and each rerun of a study, draws from its own seed: with one seed, two workers (or a
  continued study's first proposals) would repeat the same points.
  """
  import optuna
  seed = spec.seed + worker + 1009 * done
  if spec.sampler == "random":
    return optuna.samplers.RandomSampler(seed=seed)
  if spec.sampler == "grid":

    class Grid(optuna.samplers.GridSampler):
      """Without the `study.stop()` at the grid's end, which works only inside `optimize`: the budget
      (`--trials` is capped at the grid's size) ends the study instead."""

      def after_trial(self, study, trial, state, values) -> None:
        del study, trial, state, values

    return Grid(spec.grid_space(), seed=seed)
  if spec.sampler == "cmaes":
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=spec.startup_trials)
  return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials)


def make_pruner(spec: Spec):
  """The Optuna pruner of `spec` (`none` never prunes; `threshold:V` prunes values worse than V)."""
  import optuna
  name, value = parse_pruner(spec.pruner)
  if name == "median":
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials)
  if name == "halving":
    return optuna.pruners.SuccessiveHalvingPruner()
  if name == "hyperband":
    return optuna.pruners.HyperbandPruner()
  if name == "threshold":
    bound = {"lower": value} if spec.direction == "maximize" else {"upper": value}
    return optuna.pruners.ThresholdPruner(**bound)
  return optuna.pruners.NopPruner()


def open_storage(url: str, heartbeat: int):
  """An RDB storage with heartbeats: a trial silent for 2 heartbeats is failed and retried (enqueued)."""
  import optuna
  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  # Occam asks and tells itself (to keep `--trials` exact) and runs the heartbeat as optimize() would.
  warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
  engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
  return optuna.storages.RDBStorage(
      url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))


def load_study(spec: Spec, worker: int = 0):
  """Creates the study in its storage, or loads it (a rerun, another worker or machine)."""
  import optuna
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study = optuna.create_study(storage=open_storage(spec.storage, spec.heartbeat), study_name=spec.study,
                              direction=spec.direction, pruner=make_pruner(spec), load_if_exists=True)
  study.sampler = make_sampler(spec, worker, done=len(study.get_trials(deepcopy=False)))
  return study


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


def run_trial(study, trial, spec: Spec) -> str:
  """Trains `trial` in process, reporting `spec.metric` at every evaluation; tells the study. Its state.

  A retried trial trains in the model dir of the trial it retries, so it resumes from its checkpoint.
  A run that fails by itself (non-finite, bad config) is FAIL with user attr `error`; preemption
  propagates with the trial left RUNNING, to be retried after its heartbeat goes stale.
  """
  import optuna

  from trainer import api
  from trainer.loop import recovery
  values = {d.key: d.suggest(trial) for d in spec.space}
  point = sweep.Point(tuple(values.items()))
  original = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(
      trial.storage.get_trial(trial._trial_id))
  point_dir = trial_dir(spec.study_dir, trial.number if original is None else original)
  argv = sweep.command(sys.executable, spec.gin_files, spec.bindings, point, point_dir)
  sweep.write_point(point_dir, point, argv, trial=trial.number, study=spec.study)
  trial.set_user_attr("model_dir", point_dir)

  def report(step: int, metrics) -> bool:
    if spec.metric not in metrics:
      return False
    trial.report(float(metrics[spec.metric]), step)
    return trial.should_prune()

  started = time.perf_counter()
  heartbeat = optuna.storages._heartbeat.get_heartbeat_thread(trial._trial_id, study._storage)
  with heartbeat:
    try:
      results = workers.train_point(spec.gin_files, list(spec.bindings) + point.gin_bindings(), point_dir,
                                    callbacks=[report])
    except (api.InvalidRunError, recovery.NonFiniteError) as error:
      trial.set_user_attr("error", str(error))
      study.tell(trial, state=optuna.trial.TrialState.FAIL)
      return "FAIL"
  trial.set_user_attr("step", results.step)
  if results.stopped_by_callback:
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    state, value = "PRUNED", trial.storage.get_trial(trial._trial_id).value
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
  print(f"tune: worker {worker}: joined study {study.study_name!r}", file=sys.stderr, flush=True)
  while True:
    trial = next_trial(study, spec)
    if trial == "done":
      return 0
    if trial is None:  # Every remaining trial is running elsewhere: wait for them (or their staleness).
      time.sleep(spec.heartbeat)
      continue
    try:
      state = run_trial(study, trial, spec)
    except preemption.Preempted as stop:
      print(f"tune: worker {worker}: {stop}", file=sys.stderr, flush=True)
      return EXIT_PREEMPTED
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


def write_study_plots(study, out_dir: str, metric: str, prefix: str = "") -> dict[str, str]:
  """The study's own views as PNGs (`plots.write_study_views`); {name: path}. Says which it left out."""
  written, skipped = plots.write_study_views(study, metric, out_dir, prefix)
  for name, reason in skipped.items():
    print(f"{prefix}{name}.png not drawn: {reason}", file=sys.stderr)
  return written


def write_record_views(study_dir: str, out_dir: str) -> dict[str, str]:
  """The study views of the study recorded in `study_dir/sweep.json`, as `<dir name>_<view>.png` in
  `out_dir` (for `occam-report`); {} for a grid sweep's directory or a study without enough trials."""
  record = sweep.read_record(study_dir)
  if "study" not in record:  # before importing Optuna, which a grid sweep's report does not need
    return {}
  import optuna
  study = optuna.load_study(study_name=record["study"], storage=record["storage"])
  return write_study_plots(study, out_dir, record["metric"],
                           prefix=f"{os.path.basename(os.path.normpath(study_dir))}_")


def summary(study, metric: str) -> str:
  """A table of the trials under a header (number, state, `metric`'s value, step, params), then the best."""
  width = max(10, len(metric))
  lines = [f"{'trial':>5} {'state':8s} {metric:<{width}} {'step':>6} params"]
  lines += [f"{t.number:5d} {t.state.name:8s} {t.value if t.value is not None else '':<{width}.6} "
            f"{t.user_attrs.get('step', '')!s:>6} {t.params}" for t in study.get_trials(deepcopy=False)]
  try:
    best = study.best_trial
    lines.append(f"best: trial {best.number} {best.value:.6g} {best.params}")
  except ValueError:
    lines.append("best: no complete trial")
  return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The command line of `occam-tune`; gin file paths that exist and `--study_dir` made absolute."""
  parser = argparse.ArgumentParser(prog="occam-tune", description=__doc__.split("\n\n")[0].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", required=True, help="gin file(s), as trainer.main's")
  parser.add_argument("--gin_bindings", action="append", default=[], help="a binding of every trial")
  parser.add_argument("--space", action="append", default=[],
                      help="KEY=uniform|loguniform|int(LOW, HIGH) or KEY=choice(V1, ...); repeatable")
  parser.add_argument("--space_file", help="one --space entry per line ('#' comments)")
  parser.add_argument("--metric", default="eval/accuracy", help="the tag each evaluation reports")
  parser.add_argument("--trials", type=int, default=20, help="finished trials the study ends with")
  parser.add_argument("--study_dir", required=True, help="one model dir per trial; the default storage")
  parser.add_argument("--storage", help=f"an Optuna RDB URL (default: sqlite:///STUDY_DIR/{DB_FILE})")
  parser.add_argument("--study", help="the study's name in the storage (default: STUDY_DIR's name)")
  parser.add_argument("--sampler", default="tpe", choices=SAMPLERS)
  parser.add_argument("--pruner", default="none", help=f"one of {', '.join(PRUNERS)}")
  parser.add_argument("--startup_trials", type=int, default=5,
                      help="trials before TPE/CMA-ES model the space and before the median pruner prunes")
  parser.add_argument("--grid_size", type=int, default=5, help="grid sampler: values per range")
  parser.add_argument("--parallel", type=int, default=1, help="worker processes on this machine")
  parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (worker k uses SEED+k)")
  parser.add_argument("--heartbeat", type=int, default=10,
                      help="seconds between a running trial's heartbeats; 2 missed ones fail it")
  args = parser.parse_args(argv)
  for name in ("trials", "parallel", "grid_size", "heartbeat"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  args.gin_file = [os.path.abspath(p) if os.path.exists(p) else p for p in args.gin_file]
  args.study_dir = os.path.abspath(args.study_dir)
  args.storage = args.storage or f"sqlite:///{os.path.join(args.study_dir, DB_FILE)}"
  args.study = args.study or os.path.basename(args.study_dir)
  return args


def make_spec(args: argparse.Namespace) -> Spec:
  """Parses and validates everything `args` says (SpaceError naming the culprit) into a `Spec`."""
  space = parse_space(args.space, args.space_file)
  parse_pruner(args.pruner)
  if args.sampler == "cmaes":
    try:
      import cmaes  # noqa: F401
    except ImportError as error:
      raise SpaceError("--sampler=cmaes needs the cmaes package: pip install cmaes") from error
  spec = Spec(tuple(args.gin_file), tuple(args.gin_bindings), tuple(space), args.metric,
              direction(args.metric), args.study_dir, args.storage, args.study, args.trials, args.sampler,
              args.pruner, args.startup_trials, args.grid_size, args.seed, args.heartbeat)
  if spec.sampler == "grid":  # The grid is the budget: a grid sampler would repeat points after it.
    spec = dataclasses.replace(spec, trials=min(spec.trials, math.prod(map(len, spec.grid_space().values()))))
  validate(spec.gin_files, spec.bindings, spec.space)
  return spec


def _record_invocation(args: argparse.Namespace, spec: Spec, seconds: float) -> None:
  """The study's `sweep.json`: the experiment (checked on reruns) and every invocation's wall time."""
  record = sweep.read_record(spec.study_dir)
  record.update(gin_files=list(spec.gin_files), gin_bindings=list(spec.bindings), space=args.space,
                space_file=args.space_file, metric=spec.metric, storage=spec.storage, study=spec.study)
  record.setdefault("invocations", []).append({
      "started": datetime.datetime.now().isoformat(timespec="seconds"), "wall_seconds": round(seconds, 1),
      "parallel": args.parallel, "sampler": spec.sampler, "pruner": spec.pruner, "trials": spec.trials})
  sweep.write_json(os.path.join(spec.study_dir, sweep.SWEEP_FILE), record)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of `occam-tune`: runs (or continues) the study `argv` describes; exit code."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    spec = make_spec(args)
    sweep.check_same_experiment(argparse.Namespace(sweep_dir=spec.study_dir, gin_file=args.gin_file,
                                                   gin_bindings=args.gin_bindings))
  except (SpaceError, sweep.GridError) as error:
    print(f"tune: error: {error}", file=sys.stderr)
    return sweep.EXIT_BAD_INPUT
  os.makedirs(spec.study_dir, exist_ok=True)
  started = time.perf_counter()
  study = load_study(spec)  # Created here once, before workers race to create it.
  print(f"tune: study {spec.study!r} in {spec.storage}: {spec.direction} {spec.metric}, {spec.trials} "
        f"trials, {args.parallel} worker(s), sampler {spec.sampler}, pruner {spec.pruner}",
        file=sys.stderr, flush=True)
  code = run_workers(spec, args.parallel)
  _record_invocation(args, spec, time.perf_counter() - started)
  print(summary(study, spec.metric))
  for path in write_study_plots(study, spec.study_dir, spec.metric).values():
    print(f"wrote {path}", file=sys.stderr)
  return code


if __name__ == "__main__":
  sys.exit(main())
