r"""Occam's performance benchmark (docs/PERFORMANCE.md): throughput against a bare loop and Keras `fit`.

    python scripts/benchmark.py            # the full run (a few minutes on 2 cores)
    python scripts/benchmark.py --quick    # tiny models, one repeat: a smoke run, numbers meaningless
    python scripts/benchmark.py --sections=frameworks,costs   # only some sections

The machinery is `trainer.benchmarks.throughput`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.benchmarks import throughput  # noqa: E402

if __name__ == "__main__":
  sys.exit(throughput.main())
