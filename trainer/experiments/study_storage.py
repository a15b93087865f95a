"""The study of `occam-tune` and where it lives: its spec, sampler, pruner, storage and views.

The study lives in an Optuna RDB storage, by default SQLite in `STUDY_DIR/study.db`: an RDB storage
because Optuna's heartbeats (the detection of trials whose worker died) need one (its journal file
storage has none), SQLite because it is one file and no server. Several machines share one study
through any RDB URL (`--storage=postgresql+psycopg2://user@host/db --study=NAME`). A storage that cannot
be opened (a damaged SQLite file, a server that refuses or does not answer within
`CONNECT_TIMEOUT_SECONDS`) is a `StorageError` naming it, its password masked.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings

from trainer.experiments import sweep
from trainer.experiments.search_space import Dimension, SpaceError
from trainer.metrics import tags

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("none", "median", "halving", "hyperband", "threshold:VALUE")
DB_FILE = "study.db"
MAX_RETRIES = 3  # A trial whose worker keeps dying (e.g. out of memory) is not retried forever.
# How long opening a server's storage may take: a server that accepts connections but never answers
# must not hang the command. A `connect_timeout` in the URL's query overrides it.
CONNECT_TIMEOUT_SECONDS = 10


class StorageError(ValueError):
  """The study's storage cannot be opened; the message names it (password masked) and why."""


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


def default_storage(study_dir: str) -> str:
  """The storage of a study without `--storage`: SQLite in `STUDY_DIR/study.db`."""
  return f"sqlite:///{os.path.join(study_dir, DB_FILE)}"


def masked(url: str) -> str:
  """`url` with its password, if any, shown as `***` (for messages and logs)."""
  import sqlalchemy
  try:
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
  except sqlalchemy.exc.ArgumentError:
    return url


def open_storage(url: str, heartbeat: int):
  """An RDB storage with heartbeats: a trial silent for 2 heartbeats is failed and retried (enqueued).

  Raises `StorageError` naming the storage if it cannot be opened: a bad URL, a missing database
  driver, a damaged SQLite file, a server that refuses, or does not answer within
  `CONNECT_TIMEOUT_SECONDS` (SQLite's own timeout is its wait for another writer's lock).
  """
  import optuna
  import sqlalchemy
  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  # Occam asks and tells itself (to keep `--trials` exact) and runs the heartbeat as optimize() would.
  warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
  try:
    connect_args = {"timeout": 60} if url.startswith("sqlite") else _connect_timeout(url)
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": connect_args}, heartbeat_interval=heartbeat,
        grace_period=2 * heartbeat,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
  except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as error:
    raise StorageError(f"--storage={masked(url)}: cannot open the study's storage: "
                       f"{_reason(error, url)}") from error


def _connect_timeout(url: str) -> dict:
  """The driver's connect timeout for a server URL (PostgreSQL's and MySQL's drivers call it
  `connect_timeout`), unless the URL sets one."""
  import sqlalchemy
  parsed = sqlalchemy.engine.make_url(url)
  if parsed.get_backend_name() not in ("postgresql", "mysql", "mariadb") or "connect_timeout" in parsed.query:
    return {}
  return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


def _reason(error: BaseException, url: str) -> str:
  """The first line of the driver's own message (SQLAlchemy's wrapping adds SQL and a link)."""
  cause = getattr(error, "orig", None) or error
  lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
  text = lines[0] if lines else type(cause).__name__
  if isinstance(error, ImportError):
    text = f"its database driver is not installed ({text})"
  return text.replace(url, masked(url))


def load_study(spec: Spec, worker: int = 0):
  """Creates the study in its storage, or loads it (a rerun, another worker or machine)."""
  import optuna
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  storage = open_storage(spec.storage, spec.heartbeat)
  study = optuna.create_study(storage=storage, study_name=spec.study, direction=spec.direction,
                              pruner=make_pruner(spec), load_if_exists=True)
  study.sampler = make_sampler(spec, worker, done=len(study.get_trials(deepcopy=False)))
  return study


def write_study_plots(study, out_dir: str, metric: str, prefix: str = "") -> dict[str, str]:
  """The study's own views as PNGs (`plots.write_study_views`); {name: path}. Says which it left out."""
  from trainer.experiments import plots
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
