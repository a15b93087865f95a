r"""Per-host input throughput on ImageNet-shaped JPEGs: Occam's input pipeline against a reference.

    python scripts/benchmark_input.py              # 1,024 JPEGs, batch 128, 3 repeats of 10 batches
    python scripts/benchmark_input.py --quick      # a smoke run: few images and batches, numbers meaningless

The machinery is `trainer.benchmarks.input_throughput`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.benchmarks import input_throughput  # noqa: E402

if __name__ == "__main__":
  sys.exit(input_throughput.main())
