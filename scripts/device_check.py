r"""The device check for the first GPU host or TPU VM: compiles, trains, feeds; prints a table to send back.

    python scripts/device_check.py --strategy=tpu --tpu=local   # a Cloud TPU VM
    python scripts/device_check.py --strategy=mirrored          # every GPU of this host
    python scripts/device_check.py --tiny                       # a smoke run on any machine

The machinery is `trainer.benchmarks.device_check`; what to send back: docs/TPU.md.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.benchmarks import device_check  # noqa: E402

if __name__ == "__main__":
  sys.exit(device_check.main())
