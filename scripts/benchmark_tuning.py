r"""Trials per hour: long-lived workers (`occam-tune`, `occam-sweep`) against one process per point.

    python scripts/benchmark_tuning.py                     # claim 1's 21 points, 200 steps each
    python scripts/benchmark_tuning.py --seeds=1 --steps=100   # 7 points: a smoke run

The machinery is `trainer.benchmarks.tuning`.
"""

import sys

from trainer.benchmarks import tuning

if __name__ == "__main__":
  sys.exit(tuning.main())
