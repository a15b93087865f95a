r"""Hyperparameter search with Optuna: each trial is an Occam run, tuned through gin bindings.

    occam-tune --gin_file=gin_configs/experiments/claim1_l2_u_curve.gin \
        --space 'L2.scale=loguniform(1e-6, 1e-1)' --space 'Trainer.learning_rate=loguniform(1e-4, 1e-2)' \
        --metric=eval/accuracy --trials=40 --parallel=2 --pruner=median --study_dir=sweeps/l2_tpe

The search space: `KEY=uniform(LOW, HIGH)`, `KEY=loguniform(LOW, HIGH)`, `KEY=int(LOW, HIGH)` (both
ends included) or `KEY=choice(V1, V2, ...)` (gin values, exactly as typed), from `--space` or one per
line of `--space_file` (`#` starts a comment). It is checked by gin, ends and choices included, before
any trial starts (`trainer.experiments.search_space`). The direction (maximize or minimize `--metric`)
comes from the tag registry.

Every trial trains in its own model dir `STUDY_DIR/trial-NNNN`, laid out like a sweep point
(`point.json`, `log.txt`, `done.json`; see `trainer.experiments.sweep`), so `occam-report STUDY_DIR`,
`trainer.experiments.results` and TensorBoard's HParams dashboard (`--logdir STUDY_DIR`) read a study
as they read a sweep. A trial reports `--metric` after every evaluation; a pruned trial stops there
with a checkpoint and is marked PRUNED. At the end the study's own views (optimization history,
parameter importances, slice plot) are written to STUDY_DIR as PNGs.

Trials run in `--parallel` long-lived worker processes (this one and `--parallel - 1` spawned ones;
`trainer.experiments.trial_runner`, over `trainer.experiments.workers`, shared with `occam-sweep`):
TensorFlow is imported once per worker, and `trainer.train` resets gin, the Keras precision policy and
every seed for each run (the worker also clears the Keras session), so a trial's result does not depend
on what the worker ran before. The study lives in `--storage`, by default SQLite in
`STUDY_DIR/study.db` (`trainer.experiments.study_storage`). Several machines share one study through
any RDB URL (`--storage=postgresql+psycopg2://user@host/db --study=NAME`); a storage that cannot be
opened (a damaged file, a server that refuses or does not answer within 10 s) is bad input. Rerunning
the command continues the study until `--trials` trials have finished. A trial whose worker died or
stalled goes stale after two missed heartbeats (`--heartbeat`), is marked FAIL and retried with its
parameters in its own model dir, so it resumes from its last checkpoint; the retry replaces it in the
count. A killed worker is reaped at once; a stalled one that thaws stops its stale trial at its next
evaluation (the retry waits for it) and goes on.

Exit codes: 0 the study has its trials, 1 a worker failed (e.g. was killed; rerun to finish the
study), 2 bad input, 75 preempted (rerun to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import sys
import time
from typing import Sequence

from trainer.experiments import search_space, study_storage, sweep, trial_runner
from trainer.runtime import console


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
  parser.add_argument("--storage",
                      help=f"an Optuna RDB URL (default: sqlite:///STUDY_DIR/{study_storage.DB_FILE})")
  parser.add_argument("--study", help="the study's name in the storage (default: STUDY_DIR's name)")
  parser.add_argument("--sampler", default="tpe", choices=study_storage.SAMPLERS)
  parser.add_argument("--pruner", default="none", help=f"one of {', '.join(study_storage.PRUNERS)}")
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
  args.storage = args.storage or study_storage.default_storage(args.study_dir)
  args.study = args.study or os.path.basename(args.study_dir)
  return args


def make_spec(args: argparse.Namespace) -> study_storage.Spec:
  """Parses and validates everything `args` says (`SpaceError` naming the culprit) into a `Spec`."""
  space = search_space.parse_space(args.space, args.space_file)
  study_storage.parse_pruner(args.pruner)
  if args.sampler == "cmaes":
    try:
      import cmaes  # noqa: F401
    except ImportError as error:
      raise search_space.SpaceError("--sampler=cmaes needs the cmaes package: pip install cmaes") from error
  spec = study_storage.Spec(
      tuple(args.gin_file), tuple(args.gin_bindings), tuple(space), args.metric,
      study_storage.direction(args.metric), args.study_dir, args.storage, args.study, args.trials,
      args.sampler, args.pruner, args.startup_trials, args.grid_size, args.seed, args.heartbeat)
  if spec.sampler == "grid":  # The grid is the budget: a grid sampler would repeat points after it.
    spec = dataclasses.replace(spec, trials=min(spec.trials, math.prod(map(len, spec.grid_space().values()))))
  search_space.validate(spec.gin_files, spec.bindings, spec.space)
  return spec


def _record_invocation(args: argparse.Namespace, spec: study_storage.Spec, seconds: float) -> None:
  """The study's `sweep.json`: the experiment (checked on reruns) and every invocation's wall time."""
  from trainer.common import files
  record = sweep.read_record(spec.study_dir)
  record.update(gin_files=list(spec.gin_files), gin_bindings=list(spec.bindings), space=args.space,
                space_file=args.space_file, metric=spec.metric, storage=spec.storage, study=spec.study)
  record.setdefault("invocations", []).append({
      "started": datetime.datetime.now().isoformat(timespec="seconds"), "wall_seconds": round(seconds, 1),
      "parallel": args.parallel, "sampler": spec.sampler, "pruner": spec.pruner, "trials": spec.trials})
  files.write_json(os.path.join(spec.study_dir, sweep.SWEEP_FILE), record)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of `occam-tune`: runs (or continues) the study `argv` describes; exit code."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  console.quiet(verbose=False)  # TensorFlow's start-up lines stay off the console
  try:
    spec = make_spec(args)
    sweep.check_same_experiment(argparse.Namespace(sweep_dir=spec.study_dir, gin_file=args.gin_file,
                                                   gin_bindings=args.gin_bindings))
  except (search_space.SpaceError, sweep.GridError) as error:
    print(f"tune: error: {error}", file=sys.stderr)
    return sweep.EXIT_BAD_INPUT
  started = time.perf_counter()
  if spec.storage == study_storage.default_storage(spec.study_dir):  # its SQLite file goes there
    os.makedirs(spec.study_dir, exist_ok=True)
  try:
    study = study_storage.load_study(spec)  # Created here once, before workers race to create it.
  except study_storage.StorageError as error:
    print(f"tune: error: {error}", file=sys.stderr)
    return sweep.EXIT_BAD_INPUT
  os.makedirs(spec.study_dir, exist_ok=True)
  print(f"tune: study {spec.study!r} in {study_storage.masked(spec.storage)}: {spec.direction} "
        f"{spec.metric}, {spec.trials} trials, {args.parallel} worker(s), sampler {spec.sampler}, "
        f"pruner {spec.pruner}",
        file=sys.stderr, flush=True)
  finished, _, _ = trial_runner.counts(study.get_trials(deepcopy=False))
  if finished < spec.trials:
    code = trial_runner.run_workers(spec, args.parallel)
  else:  # a rerun of a finished study: no worker to start
    print(f"tune: the study has its {spec.trials} finished trials", file=sys.stderr, flush=True)
    code = 0
  _record_invocation(args, spec, time.perf_counter() - started)
  print(study_storage.summary(study, spec.metric))
  for path in study_storage.write_study_plots(study, spec.study_dir, spec.metric).values():
    print(f"wrote {path}", file=sys.stderr)
  return code


if __name__ == "__main__":
  sys.exit(main())
