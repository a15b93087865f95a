"""The benchmark scripts stay wired to what they measure: `scripts/device_check.py`'s host count, and
`scripts/benchmark_models.py --jit` (`trainer.benchmarks.xla`) with the ResNet benchmark it reuses
(every workload's gin bindings parse into a Trainer, and its `fit` variant builds; nothing timed)."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from trainer.benchmarks import device_check, xla
from trainer.config import parsing, registry
from trainer.loop.settings import Trainer
from trainer.metrics.monitor import Monitor


def test_the_device_check_counts_the_hosts_of_tf_config_for_a_strategy_without_its_own(monkeypatch):
  """A TPU strategy's `extended.num_hosts` is used where it exists (a pod has no TF_CONFIG); the
  default strategy on CPU has none, so TF_CONFIG's workers count, and 1 without TF_CONFIG."""
  strategy = tf.distribute.get_strategy()
  assert not hasattr(strategy.extended, "num_hosts")
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert device_check.hosts(strategy) == 1
  workers = [f"localhost:{port}" for port in (20001, 20002, 20003)]
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker",
                                                                                        "index": 0}}))
  assert device_check.hosts(strategy) == 3


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
