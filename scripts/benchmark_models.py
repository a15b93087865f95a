r"""Training throughput of models on CIFAR-shaped data: Occam against Keras `model.fit`.

    python scripts/benchmark_models.py            # ResNet-20: batch 128, 5 repeats (a few minutes on 2 cores)
    python scripts/benchmark_models.py --quick    # batch 32, 3 repeats: a smoke run
    python scripts/benchmark_models.py --jit      # jit_compile off/on for the MLP, ResNet-20 and ViT-Ti
                                                  # against fit's default (~15 minutes; --jit --quick)

The machinery is `trainer.benchmarks.resnet` and, with `--jit`, `trainer.benchmarks.xla`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.benchmarks import resnet, xla  # noqa: E402

if __name__ == "__main__":
  arguments = sys.argv[1:]
  jit = "--jit" in arguments
  sys.exit(xla.main([a for a in arguments if a != "--jit"]) if jit else resnet.main(arguments))
