"""TPU rules the compiled train loop must follow, proven on CPU by scanning the traced graph.

XLA:TPU has no float64 (it rejects it), emulates 64-bit integers slowly and has no 64-bit sort, and a
TPU runs no Python inside a step. CPU XLA runs all of these natively, so a CPU test that only trains
cannot see them: these tests trace the host loop of a real run with every kind of term and read every
op of it and of every function it calls (the replica step, SAM's passes, the batch transform).
"""

from __future__ import annotations

import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

import trainer
from tests.helpers import QUICKSTART

PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")
SORT_OPS = ("TopKV2", "TopK")
TINY = ["Trainer.train_steps=2", "Trainer.steps_per_loop=1", "Trainer.eval_every=2", "Trainer.batch_size=16",
        "Trainer.eval_batch_size=16", "Monitor.train_eval_examples=8", "Monitor.sharpness_examples=8"]
RESIDUAL = ["Trainer.model=@CifarResNet", "CifarResNet.depth=8", "CifarResNet.stochastic_depth_rate=0.1",
            "MLP.hidden_sizes=(8,)"]


def tpu_violations(graph_def) -> list[str]:
  """Every op of `graph_def` and its function library that a TPU step may not hold, as 'function/op: why'."""
  found = []
  functions = [("(top)", graph_def.node)]
  functions += [(function.signature.name, function.node_def) for function in graph_def.library.function]
  for function, nodes in functions:
    for node in nodes:
      where = f"{function}/{node.name} ({node.op})"
      if node.op in PYTHON_OPS:
        found.append(f"{where}: Python")
      for key, attr in node.attr.items():
        types = [attr.type] if attr.HasField("type") else list(attr.list.type)
        if types_pb2.DT_DOUBLE in types:
          found.append(f"{where}: float64 in {key}")
        if node.op in SORT_OPS and key == "T" and types_pb2.DT_INT64 in types:
          found.append(f"{where}: 64-bit sort")
  return found


def _traced_train_loop(tmp_path, bindings: list[str]):
  results = trainer.train([QUICKSTART], TINY + bindings, model_dir=str(tmp_path), verbose=False)
  run = results.run
  loop = run.train_program.loop.get_concrete_function(run.train_input(0), tf.TensorSpec([], tf.int32))
  return loop.graph.as_graph_def()


def test_the_scan_finds_what_it_looks_for():
  @tf.function
  def offending(x):
    doubled = tf.cast(x, tf.float64) * 2.0
    order = tf.argsort(tf.cast(x, tf.int64))
    return tf.numpy_function(lambda v: v, [doubled], tf.float64), order
  graph = offending.get_concrete_function(tf.TensorSpec([4], tf.float32)).graph.as_graph_def()
  found = " ".join(tpu_violations(graph))
  assert "float64" in found and "64-bit sort" in found and "Python" in found


@pytest.mark.slow
def test_the_train_loop_with_every_term_holds_no_float64_64_bit_sort_or_python(tmp_path):
  """L2, L1, decoupled decay, proximal L1, ASAM, Mixup, EMA, SWA, label smoothing, stochastic depth,
  mixed_bfloat16."""
  graph = _traced_train_loop(tmp_path, RESIDUAL + [
      "Trainer.regularizers=[@L2(), @L1(), @DecoupledWeightDecay(), @ProximalL1(), @SAM(), @Mixup(), @EMA(), "
      "@SWA()]", "EMA.warmup=True", "SWA.statistics_batches=2",
      "L2.scale=1e-4", "L1.scale=1e-5", "DecoupledWeightDecay.rate=1e-4", "ProximalL1.scale=1e-5",
      "SAM.rho=0.5", "SAM.adaptive=True", "Mixup.alpha=0.2", "softmax_cross_entropy.label_smoothing=0.1",
      "Trainer.mixed_precision='mixed_bfloat16'"])
  assert not tpu_violations(graph)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="CutMix computes its box side in float64 (the reference's "
                   "arithmetic), which keeps docs/EXPERIMENTS.md claim 9 bit-identical; see docs/TPU.md")
def test_the_train_loop_with_cutmix_holds_no_float64(tmp_path):
  graph = _traced_train_loop(tmp_path, RESIDUAL + ["Trainer.regularizers=[@CutMix(), @SAM()]",
                                                   "CutMix.alpha=1.0", "SAM.rho=0.05"])
  assert not tpu_violations(graph)
