r"""Runs a grid of gin bindings in long-lived worker processes, one run per point, resumably.

    occam-sweep --gin_file=gin_configs/experiments/claim1_l2_u_curve.gin \
        --grid 'L2.scale=[0, 1e-4, 1e-3, 1e-2, 3e-2]' --grid 'Trainer.seed=[0, 1, 2]' \
        --sweep_dir=/tmp/sweeps/l2 --parallel=2

Every point trains in its own model dir `SWEEP_DIR/<bindings>` (e.g. `L2.scale=1e-3,Trainer.seed=1`),
named from the grid values exactly as typed, so a name is stable across reruns. Each point dir holds
`point.json` (its bindings and the equivalent `python -m trainer.main` command), `log.txt` (the run's
log, appended on every attempt, with the error that stopped a failed one) and, once the run finished,
`done.json`. Rerunning the same command skips finished points and reruns the others, which resume from
their own checkpoints. The whole grid is checked by gin before anything is launched, so a misspelled
key fails in a second, not after the first point trains. `SWEEP_DIR/sweep.json` records the spec and
the wall time of every invocation (for the reports). `python -m trainer.experiments.sweep` is the same
command.

The points run in `--parallel` long-lived workers (this process and `--parallel - 1` spawned ones; see
`trainer.experiments.workers`, which `occam-tune` uses too): each imports TensorFlow once and trains
the points it claims in process, one after another, with `trainer.train`, which resets gin, the
precision policy and the seeds per run, the Keras session cleared in between; so a point's result does
not depend on what its worker ran before. A point whose run raises is failed; its worker goes on.

Exit codes: 0 all points finished, 1 some point failed (its log path is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import sys
import time
from typing import Any, Sequence

from trainer.experiments import workers
from trainer.experiments.layout import DONE_FILE, LOG_FILE, POINT_FILE, SWEEP_FILE
from trainer.runtime import console

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
_MAX_NAME = 200  # Leaves room under the usual 255-byte file-name limit.


class GridError(ValueError):
  """A `--grid` entry or binding that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Point:
  """One grid point: its bindings `(key, value text)` in grid order, and its directory name."""
  bindings: tuple[tuple[str, str], ...]

  @property
  def name(self) -> str:
    return point_name(self.bindings)

  def gin_bindings(self) -> list[str]:
    return [f"{key}={value}" for key, value in self.bindings]


def split_top_level(text: str) -> list[str]:
  """Splits `text` at commas outside brackets and quotes: '1, (2, 3), "a,b"' -> 3 items."""
  items, depth, quote, current = [], 0, None, []
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in "([{":
      depth += 1
    elif char in ")]}":
      depth -= 1
    elif char == "," and depth == 0:
      items.append("".join(current).strip())
      current = []
      continue
    current.append(char)
  items.append("".join(current).strip())
  return [item for item in items if item]


def parse_grid_entry(entry: str) -> tuple[str, list[str]]:
  """'KEY=[v1, v2]' -> ('KEY', ['v1', 'v2']); values stay gin text, exactly as typed."""
  match = re.fullmatch(r"\s*([^=\s]+)\s*=\s*\[(.*)\]\s*", entry, flags=re.DOTALL)
  if not match:
    raise GridError(f"--grid {entry!r}: expected KEY=[VALUE, ...], e.g. 'L2.scale=[0, 1e-3]'")
  key, values = match.group(1), split_top_level(match.group(2))
  if not values:
    raise GridError(f"--grid {entry!r}: the value list is empty")
  if len(set(values)) != len(values):
    raise GridError(f"--grid {entry!r}: repeated values")
  return key, values


def parse_grid(entries: Sequence[str]) -> list[tuple[str, list[str]]]:
  """All `--grid` entries, checked for repeated keys."""
  grid = [parse_grid_entry(entry) for entry in entries]
  keys = [key for key, _ in grid]
  repeated = sorted({key for key in keys if keys.count(key) > 1})
  if repeated:
    raise GridError(f"--grid: keys given more than once: {repeated}")
  return grid


def expand(grid: Sequence[tuple[str, Sequence[str]]]) -> list[Point]:
  """The cartesian product, first key slowest; names checked to be distinct."""
  keys = [key for key, _ in grid]
  points = [Point(tuple(zip(keys, values))) for values in itertools.product(*(v for _, v in grid))]
  names = [point.name for point in points]
  clashes = sorted({name for name in names if names.count(name) > 1})
  if clashes:
    raise GridError(f"--grid: values differ only in characters dropped from directory names: {clashes}")
  return points


def point_name(bindings: Sequence[tuple[str, str]]) -> str:
  """A stable, filesystem-safe directory name: 'L2.scale=1e-3,Trainer.seed=1'.

  Gin decoration (`@`, brackets, quotes, spaces) is dropped and any other unsafe character becomes
  `_`; an overlong name is cut and suffixed with a hash of the full text so it stays unique.
  """
  text = ",".join(f"{key}={value}" for key, value in bindings) or "default"
  name = re.sub(r"[^A-Za-z0-9._=,+%-]", "_", re.sub(r"[@()\[\]'\" ]", "", text))
  if len(name) > _MAX_NAME:
    name = name[:_MAX_NAME - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
  return name


def validate(gin_files: Sequence[str], bindings: Sequence[str], grid: Sequence[tuple[str, Sequence[str]]],
             points: Sequence[Point], flag: str = "--grid") -> None:
  """Parses the gin files with the first point, then with every grid value once, in this process.

  Raises `GridError` naming the grid key (as `flag KEY`) whose value gin rejects (unknown
  configurable or parameter, malformed value), before any point is launched.
  """
  # Imported here: registering the configurables pulls in TensorFlow, which only validation needs.
  from trainer.config import parsing, registry
  registry.register_all()
  first = dict(points[0].bindings)
  try:
    parsing.parse(gin_files, list(bindings))
  except parsing.ConfigError as error:
    raise GridError(str(error)) from error
  for key, values in grid:
    for value in values:
      candidate = Point(tuple((k, value if k == key else v) for k, v in first.items()))
      try:
        parsing.parse(gin_files, list(bindings) + candidate.gin_bindings())
      except parsing.ConfigError as error:
        raise GridError(f"{flag} {key}: gin does not accept {key}={value}: {error}") from error


def is_done(point_dir: str) -> bool:
  """Whether the point in `point_dir` finished: its trainer exited 0 (`done.json` exists)."""
  return os.path.exists(os.path.join(point_dir, DONE_FILE))


def read_record(sweep_dir: str) -> dict:
  """`sweep.json` of `sweep_dir`: gin files, fixed bindings, grid and invocations ({} before any run)."""
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as file:
    return json.load(file)


def command(python: str, gin_files: Sequence[str], bindings: Sequence[str], point: Point,
            point_dir: str) -> list[str]:
  """The trainer command line of one point (fixed bindings first, the grid's win)."""
  return ([python, "-m", "trainer.main", f"--model_dir={point_dir}"]
          + [f"--gin_file={path}" for path in gin_files]
          + [f"--gin_bindings={b}" for b in list(bindings) + point.gin_bindings()])


def write_point(point_dir: str, point: Point, argv: Sequence[str], **extra) -> None:
  """Creates `point_dir` and writes its `point.json`: the bindings, the trainer command and `extra`."""
  from trainer.common import files  # here: TensorFlow's file API, which reading a sweep does not need
  os.makedirs(point_dir, exist_ok=True)
  files.write_json(os.path.join(point_dir, POINT_FILE),
                   {"bindings": dict(point.bindings), "command": list(argv), **extra})


def mark_done(point_dir: str, seconds: float, **extra) -> None:
  """Writes `done.json`: the point finished (`is_done`), in `seconds` of wall time, with `extra`."""
  from trainer.common import files
  files.write_json(os.path.join(point_dir, DONE_FILE),
             {"seconds": seconds, "finished": datetime.datetime.now().isoformat(), **extra})


class Progress:
  """A text progress bar on stderr, shared by the workers: one line per finished point."""

  def __init__(self, total: int, done: int):
    self.total = total
    self.done = multiprocessing.get_context("spawn").Value("i", done)

  def report(self, status: str, name: str, detail: str) -> None:
    with self.done.get_lock():
      self.done.value += 1
      width = 24
      filled = round(width * self.done.value / self.total)
      print(f"[{'#' * filled}{'.' * (width - filled)}] {self.done.value}/{self.total} {status} {name} | "
            f"{detail}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Job:
  """What the sweep's workers share (picklable): the experiment, the points to run, the next one to
  claim (a counter in shared memory, so each point runs once however fast each worker is), and the
  progress bar."""
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  sweep_dir: str
  python: str
  points: tuple[Point, ...]
  claimed: Any  # a multiprocessing.Value("i"): the index of the next point to claim
  progress: Progress

  def claim(self) -> Point | None:
    """The next point no worker has taken yet, or None when all are taken."""
    with self.claimed.get_lock():
      index = self.claimed.value
      self.claimed.value += 1
    return self.points[index] if index < len(self.points) else None


def run_point(job: Job, point: Point, worker: int = 0) -> tuple[str | None, float]:
  """Trains one point in this process (resuming from its checkpoint) and writes `done.json` if it
  finishes. Returns (None or the error that stopped it, seconds); preemption propagates.

  Any exception of the run (bad input, a non-finite loss, a config value the model rejects when it is
  built) fails only this point: the worker goes on with the next one. The log has the message.
  """
  from trainer.runtime import preemption
  point_dir = os.path.join(job.sweep_dir, point.name)
  argv = command(job.python, job.gin_files, job.bindings, point, point_dir)
  write_point(point_dir, point, argv)
  with open(os.path.join(point_dir, LOG_FILE), "a") as log:
    log.write(f"\n=== {datetime.datetime.now().isoformat(timespec='seconds')} worker {worker} (pid "
              f"{os.getpid()}), in process, as: {' '.join(argv)}\n")
  started = time.perf_counter()
  try:
    results = workers.train_point(job.gin_files, list(job.bindings) + point.gin_bindings(), point_dir)
  except preemption.Preempted:
    raise
  except Exception as error:  # The point's failure, not the worker's: see the docstring.
    return f"{type(error).__name__}: {error}", time.perf_counter() - started
  seconds = time.perf_counter() - started
  mark_done(point_dir, seconds, step=results.step, restored_from=results.restored_from)
  return None, seconds


def work(job: Job, worker: int = 0) -> int:
  """One worker: trains the points it claims until none is left. 0, or 75 when preempted."""
  from trainer.runtime import preemption
  while (point := job.claim()) is not None:
    try:
      error, seconds = run_point(job, point, worker)
    except (preemption.Preempted, preemption.Interrupted) as stop:  # a signal: the command's 75
      job.progress.report("STOPPED", point.name, f"{stop}; rerun the command to resume it")
      return preemption.EXIT_PREEMPTED
    if error is None:
      job.progress.report("ok", point.name, f"{seconds:.1f}s")
    else:
      job.progress.report("FAILED", point.name, f"{error.splitlines()[0][:300]} after {seconds:.1f}s, "
                          f"log: {os.path.join(job.sweep_dir, point.name, LOG_FILE)}")
  return 0


def run_sweep(args: argparse.Namespace, points: Sequence[Point]) -> int:
  """Trains the unfinished points in `--parallel` long-lived workers; returns the exit code."""
  todo = [p for p in points if not is_done(os.path.join(args.sweep_dir, p.name))]
  parallel = max(1, min(args.parallel, len(todo)))
  print(f"sweep: {len(points)} points in {args.sweep_dir}: {len(points) - len(todo)} finished "
        f"(skipped), {len(todo)} to run, in {parallel} worker process(es)", file=sys.stderr, flush=True)
  job = Job(tuple(args.gin_file), tuple(args.gin_bindings), args.sweep_dir, args.python, tuple(todo),
            multiprocessing.get_context("spawn").Value("i", 0),
            Progress(len(points), len(points) - len(todo)))
  started = time.perf_counter()
  if todo:
    workers.run_workers(work, (job,), parallel, name="occam-sweep", python=args.python)
  failed = [p.name for p in todo if not is_done(os.path.join(args.sweep_dir, p.name))]
  _record_invocation(args, len(todo), len(points) - len(todo), failed, time.perf_counter() - started)
  if failed:
    logs = "\n".join(f"  {os.path.join(args.sweep_dir, name, LOG_FILE)}" for name in failed)
    print(f"sweep: {len(failed)} of {len(points)} points failed (or did not run); their logs:\n{logs}",
          file=sys.stderr)
    return EXIT_FAILED
  return 0


def check_same_experiment(args: argparse.Namespace) -> None:
  """Refuses to continue a sweep directory with other gin files or fixed bindings.

  Finished points are skipped on a rerun, so a changed spec would silently mix two experiments in
  one report. Adding grid values is fine: new points are new runs.
  """
  stored = read_record(args.sweep_dir)
  for key, now in (("gin_files", args.gin_file), ("gin_bindings", args.gin_bindings)):
    if stored.get(key, now) != now:
      raise GridError(f"--sweep_dir={args.sweep_dir} was started with {key} {stored[key]}, not {now}: its "
                      "finished points would be mixed with a different experiment. Use a new --sweep_dir.")


def _record_invocation(args: argparse.Namespace, ran: int, skipped: int, failed: list[str],
                       seconds: float) -> None:
  """Appends this invocation's wall time to `sweep.json` (a resumed sweep has several)."""
  from trainer.common import files
  record = {"gin_files": args.gin_file, "gin_bindings": args.gin_bindings, "grid": args.grid,
            "invocations": read_record(args.sweep_dir).get("invocations", [])}
  record["invocations"].append({"started": datetime.datetime.now().isoformat(timespec="seconds"),
                                "wall_seconds": round(seconds, 1), "parallel": args.parallel,
                                "ran": ran, "skipped": skipped, "failed": failed})
  files.write_json(os.path.join(args.sweep_dir, SWEEP_FILE), record)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The command line of `occam-sweep`; gin file paths that exist and `--sweep_dir` made absolute."""
  parser = argparse.ArgumentParser(prog="occam-sweep", description=__doc__.split("\n\n")[0].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", required=True,
                      help="gin file(s), parsed in order for every point (as trainer.main's --gin_file)")
  parser.add_argument("--grid", action="append", default=[],
                      help="KEY=[V1, V2, ...]: gin values for one binding; repeat for a product grid")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a binding applied to every point, before the grid's")
  parser.add_argument("--sweep_dir", required=True, help="one model dir per point is created under it")
  parser.add_argument("--parallel", type=int, default=1,
                      help="worker processes, i.e. points trained at the same time")
  parser.add_argument("--python", default=sys.executable,
                      help="interpreter of the spawned workers (this process is the first worker)")
  args = parser.parse_args(argv)
  if args.parallel < 1:
    parser.error(f"--parallel must be >= 1, got {args.parallel}")
  args.gin_file = [os.path.abspath(p) if os.path.exists(p) else p for p in args.gin_file]
  args.sweep_dir = os.path.abspath(args.sweep_dir)
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of `occam-sweep`: runs the sweep `argv` describes (default: sys.argv[1:]); exit code."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  console.quiet(verbose=False)  # TensorFlow's start-up lines stay off the console
  try:
    grid = parse_grid(args.grid)
    points = expand(grid)
    validate(args.gin_file, args.gin_bindings, grid, points)
    check_same_experiment(args)
  except GridError as error:
    print(f"sweep: error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT
  os.makedirs(args.sweep_dir, exist_ok=True)
  return run_sweep(args, points)


if __name__ == "__main__":
  sys.exit(main())
