"""Measures the cost of the default `Monitor` metric set on the quickstart (docs/METRICS.md).

    python scripts/metrics_overhead.py --repeats=5

The machinery is `trainer.benchmarks.monitor_overhead`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.benchmarks import monitor_overhead  # noqa: E402

if __name__ == "__main__":
  sys.exit(monitor_overhead.main())
