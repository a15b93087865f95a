"""`scripts/benchmark_models.py --jit` (`trainer.benchmarks.xla`) stays wired to the ResNet benchmark it
reuses: every workload's gin bindings parse into a Trainer, and its `fit` variant builds (nothing timed)."""

from __future__ import annotations

import pytest

from trainer.benchmarks import xla
from trainer.config import parsing, registry
from trainer.loop.settings import Trainer
from trainer.metrics.monitor import Monitor


@pytest.mark.parametrize("workload", xla.QUICK.workloads(), ids=lambda workload: workload.name)
def test_each_jit_workload_parses_and_builds_its_fit_variant(workload):
  registry.register_all()
  for jit in (False, True):
    parsing.parse([], xla.occam_bindings(workload, jit))
    settings = Trainer()
    assert settings.jit_compile is jit and Monitor().grad_norm_every == 0
  variant = workload.fit_default()
  assert variant.work == workload.steps_per_loop


def test_the_resnet_benchmark_compiles_neither_side_on_any_device():
  """`fit` is told `jit_compile=False`; Occam must be bound so too, or 'auto' compiles it on a GPU."""
  from trainer.benchmarks import resnet
  registry.register_all()
  parsing.parse([], resnet.occam_bindings(resnet.QUICK))
  assert Trainer().jit_compile is False
