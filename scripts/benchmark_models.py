r"""Training throughput of ResNet-20 on CIFAR-shaped data: Occam against Keras `model.fit`.

    python scripts/benchmark_models.py            # batch 128, 5 repeats (a few minutes on 2 cores)
    python scripts/benchmark_models.py --quick    # batch 32, 3 repeats: a smoke run

The machinery is `trainer.benchmarks.resnet`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.benchmarks import resnet  # noqa: E402

if __name__ == "__main__":
  sys.exit(resnet.main())
