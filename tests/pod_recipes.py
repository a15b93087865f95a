"""Shipped recipes on a pod's replica count, in one process:
`python -m tests.pod_recipes N OUT.json [RECIPE ...]` (every recipe of `SHRINK` when none is named).

Splits the CPU into N logical devices, builds one MirroredStrategy over all of them (TensorFlow's
collectives allow one per process) and runs each recipe of `SHRINK` through `trainer.train` with its
own batch sizes, strategy, data pipeline, terms and mixed-precision policy: two steps in one loop, a
checkpoint, then the evaluation of the validation and test splits (evaluation batches padded for the
replicas). A recipe whose training batch the replicas cannot split must be refused before anything is
written, naming the sizes that work; it then runs at the first of them. One start-up of TensorFlow
serves them all (tests/test_pod_recipes.py).

What is not the recipe's, to make a run cheap (the CPU goes into tracing one copy of every step per
replica, instantiating those copies on their devices, and the images' augmentation):
- the data: TFDS's mock data (`trainer.data.mock`), `MOCK_EXAMPLES` random examples per split;
- the models shrink through gin (`SHRINK`: fewer blocks, narrower, ImageNet at 32 px);
- the Monitor is off (its functions on replicas are tests/test_tpu_rules.py's), and so is Grappler,
  TensorFlow's rewriting of graphs before their first call (the graphs mean the same without it):
  together, the quickstart on 32 replicas from 40 s of CPU to 26 s.
One recipe stands for each distinct model, data pipeline, set of terms and batch sizes: the depths of
the CIFAR ResNets (resnet56, resnet110) shrink to resnet20's, CIFAR-10's WRN is CIFAR-100's with 10
classes, the digits recipes share quickstart's MLP or claim 9's full batch, and MNIST-1D's four share
their data and batch (the GRU is the one a replica count could upset).
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two steps in one loop, one evaluation at step 2 (the run's last). The Monitor is off (its functions
# on replicas are tests/test_tpu_rules.py's): its weight statistics and gradient-norm probe would trace
# the model once more per replica.
STEPS = ["Trainer.train_steps=2", "Trainer.steps_per_loop=2", "Trainer.eval_every=2",
         "Trainer.checkpoint_every=2", "Monitor.train_eval_examples=0", "Monitor.sharpness_examples=8",
         "Monitor.statistics_every=0", "Monitor.grad_norm_every=0"]
SMALL_IMAGENET = ["ImagePreprocessing.image_size=32"]
# Per recipe: the bindings that make its model small. Batch sizes, strategy and data stay the recipe's.
SHRINK = {
    "quickstart.gin": [],
    "cifar10/resnet20.gin": ["CifarResNet.depth=8"],
    "cifar100/wrn28_10.gin": ["WideResNet.depth=10", "WideResNet.width=1"],
    "imagenet2012/resnet50.gin": [*SMALL_IMAGENET, "ImageNetResNet.width=2"],
    "imagenet2012/vit_s16.gin": [*SMALL_IMAGENET, "ViT.variant='Ti'", "ViT.depth=1"],
    "mnist1d/gru.gin": [],
    "experiments/claim9_cutmix.gin": [],
}
# A run that outlives this dumps every thread's stack and exits 1, so that a hang (seen once, on 32
# replicas at a load of 5: minutes at 0 CPU in a futex wait) fails the test with where it stood instead
# of holding CI. A whole set takes about 10 minutes of wall on 32 quiet logical devices.
HANG_SECONDS = 1800
# Enough mock examples per split for the largest training batch (ViT's 1024 of train[:99%]).
MOCK_EXAMPLES = 1040


def run_all(num_devices: int, scratch: str, recipes: list[str]) -> dict:
  """{recipe: outcome} for each of `recipes` on `num_devices` replicas (see the module docstring)."""
  from trainer.runtime import strategy as strategy_lib
  strategy_lib.split_cpu(num_devices)
  import tensorflow as tf

  import trainer
  from trainer.data import mock

  # Grappler rewrites each replica's copy of a graph before its first call; the graphs' meaning does not
  # depend on it (a TPU compiles them with XLA); without it the quickstart on 32 replicas costs 28 % less CPU.
  tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
  strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_devices)])
  outcomes = {}
  for recipe in recipes:
    start, cpu_start = time.monotonic(), time.process_time()
    bindings = [*STEPS, *SHRINK[recipe]]
    model_dir = os.path.join(scratch, recipe.replace("/", "_"))
    outcome = {}
    with mock.mock_tfds(MOCK_EXAMPLES) as mock_bindings:
      data = [mock_bindings[-1]]  # the scratch tfds.data_dir only: mock.SHRINK's batch sizes are not used
      gin_file = os.path.join(REPO, "gin_configs", recipe)
      try:
        results = trainer.train([gin_file], data + bindings, model_dir=model_dir, strategy=strategy,
                                verbose=False)
      except trainer.InvalidRunError as error:
        outcome["refused"] = str(error)
        outcome["wrote"] = os.path.exists(model_dir)
        works = re.search(r"e\.g\. use (\d+)", str(error))
        if works is None:
          raise
        outcome["ran_at"] = int(works.group(1))
        results = trainer.train([gin_file], [*data, *bindings, f"Trainer.batch_size={works.group(1)}"],
                                model_dir=model_dir, strategy=strategy, verbose=False)
    outcome.update(step=results.step, metrics=results.metrics,
                   replicas=results.run.strategy.num_replicas_in_sync,
                   eval_batch_size=results.run.config.eval_batch_size,
                   batch_size=results.run.config.batch_size, seconds=round(time.monotonic() - start, 1),
                   cpu_seconds=round(time.process_time() - cpu_start, 1))
    outcomes[recipe] = outcome
    print(f"{recipe}: {outcome['seconds']} s ({outcome['cpu_seconds']} s of CPU)", flush=True)
  return outcomes


def main() -> None:
  num_devices, out, recipes = int(sys.argv[1]), sys.argv[2], sys.argv[3:] or list(SHRINK)
  faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
  with tempfile.TemporaryDirectory(prefix="occam_pod_recipes_") as scratch:
    outcomes = run_all(num_devices, scratch, recipes)
  with open(out, "w") as file:
    json.dump(outcomes, file)


if __name__ == "__main__":
  main()
