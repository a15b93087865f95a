r"""Occam's data-at-scale benchmark: memory and start-up flat in the dataset size, input vs model speed.

    python scripts/benchmark_data.py                       # 10k, 100k and 1M CIFAR-shaped images
    python scripts/benchmark_data.py --sizes=10000,100000 --steps=20
    python scripts/benchmark_data.py --quick               # smoke run: tiny sizes, numbers meaningless

The machinery is `trainer.benchmarks.data_scale`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.benchmarks import data_scale  # noqa: E402

if __name__ == "__main__":
  sys.exit(data_scale.main())
