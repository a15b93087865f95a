r"""Trials per hour: long-lived workers (`occam-tune`, `occam-sweep`) against one process per point.

    python scripts/benchmark_tuning.py                     # claim 1's 21 points, 200 steps each
    python scripts/benchmark_tuning.py --seeds=1 --steps=100   # 7 points: a smoke run

All three sides train the same points, side by side in one invocation: the claim-1 label-noise U-curve
config (`gin_configs/experiments/claim1_l2_u_curve.gin`) shortened to `--steps` steps, on its grid
(docs/EXPERIMENTS.md): 7 values of `L2.scale` times `--seeds` seeds. The baseline launches `python -m
trainer.main` per point, `--parallel` at a time, as `occam-sweep` did before it had workers; the sweep
(`occam-sweep`) and the tuner (a grid study, `--sampler=grid` over `choice(...)`) run the points in
`--parallel` long-lived workers that import TensorFlow once. Each side is timed as its whole command,
start-up, gin validation and the study's plots included, so the workers' one-off costs count against
them. Printed: wall seconds, trials per hour of each side, their ratio to the baseline (the issue's
target: >= 3x), and the median seconds per trial (the points' `done.json`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from trainer.benchmarks.children import REPO

CONFIG = "gin_configs/experiments/claim1_l2_u_curve.gin"
STRENGTHS = ("0", "1e-4", "1e-3", "3e-3", "1e-2", "3e-2", "1e-1")  # claim 1's grid


def _timed(module: str, args: list[str], log_path: str) -> float:
  """Runs `python -m trainer.experiments.MODULE ARGS` from the repo root; its wall seconds."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  started = time.perf_counter()
  with open(log_path, "w") as log:
    code = subprocess.run([sys.executable, "-m", f"trainer.experiments.{module}", *args], cwd=REPO,
                          env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
  seconds = time.perf_counter() - started
  if code:
    raise RuntimeError(f"{module} exited {code}; see {log_path}")
  return seconds


def _process_per_point(points: list[list[str]], fixed: list[str], run_dir: str, parallel: int) -> float:
  """The baseline: `python -m trainer.main` per point (its bindings), `parallel` at a time, each in
  `run_dir/<bindings>` with its output in `log.txt` and its seconds in `done.json`. Wall seconds."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

  def run(bindings: list[str]) -> None:
    point_dir = os.path.join(run_dir, ",".join(bindings))
    os.makedirs(point_dir, exist_ok=True)
    argv = ([sys.executable, "-m", "trainer.main", f"--model_dir={point_dir}", f"--gin_file={CONFIG}"]
            + [f"--gin_bindings={b}" for b in fixed + bindings])
    started = time.perf_counter()
    with open(os.path.join(point_dir, "log.txt"), "w") as log:
      code = subprocess.run(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            check=False).returncode
    if code:
      raise RuntimeError(f"trainer.main exited {code}; see {point_dir}/log.txt")
    with open(os.path.join(point_dir, "done.json"), "w") as file:
      json.dump({"seconds": time.perf_counter() - started}, file)

  started = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    list(pool.map(run, points))
  return time.perf_counter() - started


def _trial_seconds(run_dir: str) -> list[float]:
  """The wall seconds of each finished run under `run_dir` (its `done.json`)."""
  seconds = []
  for name in sorted(os.listdir(run_dir)):
    path = os.path.join(run_dir, name, "done.json")
    if os.path.exists(path):
      with open(path) as file:
        seconds.append(json.load(file)["seconds"])
  return seconds


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/benchmark_tuning.py`."""
  parser = argparse.ArgumentParser(prog="benchmark_tuning.py", description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", type=int, default=3, help="seeds per strength (Trainer.seed 0, 1, ...)")
  parser.add_argument("--steps", type=int, default=200, help="training steps per point")
  parser.add_argument("--parallel", type=int, default=1, help="processes (sweep) / workers (tuner)")
  parser.add_argument("--out_dir", help="where both write their runs (default: a temporary directory)")
  args = parser.parse_args(argv)
  strengths, seeds = ", ".join(STRENGTHS), ", ".join(map(str, range(args.seeds)))
  points = len(STRENGTHS) * args.seeds
  out_dir = args.out_dir or tempfile.mkdtemp(prefix="occam-benchmark-tuning-")
  os.makedirs(out_dir, exist_ok=True)
  fixed = [f"Trainer.train_steps={args.steps}", f"Trainer.eval_every={args.steps // 2}",
           f"Trainer.steps_per_loop={args.steps // 2}", f"Trainer.checkpoint_every={args.steps}"]
  common = [f"--gin_file={CONFIG}", *(f"--gin_bindings={b}" for b in fixed), f"--parallel={args.parallel}"]
  dirs = {side: os.path.join(out_dir, side) for side in ("processes", "sweep", "study")}
  print(f"{points} points of {CONFIG}, {args.steps} steps each, {args.parallel} at a time; "
        f"runs in {out_dir}", flush=True)
  seconds = {"processes": _process_per_point([[f"L2.scale={s}", f"Trainer.seed={k}"] for s in STRENGTHS
                                              for k in range(args.seeds)], fixed, dirs["processes"],
                                             args.parallel)}
  seconds["sweep"] = _timed("sweep", [*common, f"--sweep_dir={dirs['sweep']}", "--grid",
                                      f"L2.scale=[{strengths}]", "--grid", f"Trainer.seed=[{seeds}]"],
                            os.path.join(out_dir, "sweep.log"))
  seconds["study"] = _timed("tune", [*common, f"--study_dir={dirs['study']}", "--sampler=grid",
                                     f"--trials={points}", "--space", f"L2.scale=choice({strengths})",
                                     "--space", f"Trainer.seed=choice({seeds})"],
                            os.path.join(out_dir, "tune.log"))
  names = {"processes": "one trainer.main process per point", "sweep": "long-lived workers (occam-sweep)",
           "study": "long-lived workers (occam-tune)"}
  print(f"{'':38s} {'wall s':>8s} {'trials/hour':>12s} {'median s/trial':>15s} {'vs processes':>13s}")
  for side, name in names.items():
    per_trial = _trial_seconds(dirs[side])
    if len(per_trial) != points:
      raise RuntimeError(f"{name}: {len(per_trial)} of {points} points finished under {dirs[side]}")
    print(f"{name:38s} {seconds[side]:8.1f} {3600 * points / seconds[side]:12.0f} "
          f"{statistics.median(per_trial):15.2f} {seconds['processes'] / seconds[side]:12.2f}x")
  return 0
