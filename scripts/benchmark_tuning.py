r"""Trials per hour: long-lived tuning workers (`occam-tune`) against one process per point (`occam-sweep`).

    python scripts/benchmark_tuning.py                     # claim 1's 21 points, 200 steps each
    python scripts/benchmark_tuning.py --seeds=1 --steps=100   # 7 points: a smoke run

Both sides train the same points, side by side in one invocation: the claim-1 label-noise U-curve
config (`gin_configs/experiments/claim1_l2_u_curve.gin`) shortened to `--steps` steps, on its grid
(docs/EXPERIMENTS.md): 7 values of `L2.scale` times `--seeds` seeds. The sweep launches `python -m
trainer.main` per point, as `occam-sweep` does; the tuner runs the same points as a grid study
(`--sampler=grid` over `choice(...)`) in `--parallel` long-lived workers that import TensorFlow once.
Each side is timed as its whole command, start-up, gin validation and the study's plots included, so
the tuner's one-off costs count against it. Printed: wall seconds, trials per hour of each side,
their ratio (the issue's target: >= 3x), and the median seconds per trial (the points' `done.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    sys.exit(f"{module} exited {code}; see {log_path}")
  return seconds


def _trial_seconds(run_dir: str) -> list[float]:
  """The wall seconds of each finished run under `run_dir` (its `done.json`)."""
  seconds = []
  for name in sorted(os.listdir(run_dir)):
    path = os.path.join(run_dir, name, "done.json")
    if os.path.exists(path):
      with open(path) as file:
        seconds.append(json.load(file)["seconds"])
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", type=int, default=3, help="seeds per strength (Trainer.seed 0, 1, ...)")
  parser.add_argument("--steps", type=int, default=200, help="training steps per point")
  parser.add_argument("--parallel", type=int, default=1, help="processes (sweep) / workers (tuner)")
  parser.add_argument("--out_dir", help="where both write their runs (default: a temporary directory)")
  args = parser.parse_args()
  strengths, seeds = ", ".join(STRENGTHS), ", ".join(map(str, range(args.seeds)))
  points = len(STRENGTHS) * args.seeds
  out_dir = args.out_dir or tempfile.mkdtemp(prefix="occam-benchmark-tuning-")
  os.makedirs(out_dir, exist_ok=True)
  bindings = [f"--gin_bindings={b}" for b in (f"Trainer.train_steps={args.steps}",
                                              f"Trainer.eval_every={args.steps // 2}",
                                              f"Trainer.steps_per_loop={args.steps // 2}",
                                              f"Trainer.checkpoint_every={args.steps}")]
  common = [f"--gin_file={CONFIG}", *bindings, f"--parallel={args.parallel}"]
  sweep_dir, study_dir = os.path.join(out_dir, "sweep"), os.path.join(out_dir, "study")
  print(f"{points} points of {CONFIG}, {args.steps} steps each, {args.parallel} at a time; "
        f"runs in {out_dir}", flush=True)
  sweep_seconds = _timed("sweep", [*common, f"--sweep_dir={sweep_dir}",
                                   "--grid", f"L2.scale=[{strengths}]", "--grid", f"Trainer.seed=[{seeds}]"],
                         os.path.join(out_dir, "sweep.log"))
  tune_seconds = _timed("tune", [*common, f"--study_dir={study_dir}", "--sampler=grid",
                                 f"--trials={points}", "--space", f"L2.scale=choice({strengths})",
                                 "--space", f"Trainer.seed=choice({seeds})"],
                        os.path.join(out_dir, "tune.log"))
  rows = [("one process per point (occam-sweep)", sweep_seconds, _trial_seconds(sweep_dir)),
          ("long-lived workers (occam-tune)", tune_seconds, _trial_seconds(study_dir))]
  print(f"{'':38s} {'wall s':>8s} {'trials/hour':>12s} {'median s/trial':>15s}")
  for name, seconds, per_trial in rows:
    assert len(per_trial) == points, (name, per_trial)
    print(f"{name:38s} {seconds:8.1f} {3600 * points / seconds:12.0f} "
          f"{statistics.median(per_trial):15.2f}")
  print(f"ratio (tuner / sweep trials per hour): {sweep_seconds / tune_seconds:.2f}x")


if __name__ == "__main__":
  main()
