"""TPU rules the compiled train loop and the Monitor must follow, proven on CPU by scanning traced graphs.

XLA:TPU has no float64 (it rejects it), emulates 64-bit integers slowly and has no 64-bit sort, and a
TPU runs no Python inside a step. CPU XLA runs all of these natively, so a CPU test that only trains
cannot see them: these tests trace the host loop of a real run with every kind of term and read every
op of it and of every function it calls (the replica step, SAM's passes, the batch transform).
A graph is also shipped to every host of a pod: the Monitor's functions, traced under a real
MirroredStrategy, hold no constant over 1 KB (their probe examples live in variables).
"""

from __future__ import annotations

import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

import trainer
from tests.conftest import mirrored
from tests.helpers import QUICKSTART
from trainer.config import parsing
from trainer.loop import builder
from trainer.loop.settings import Trainer

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


CONSTANT_BYTES = 1024  # data larger than this in a graph is a probe batch, not a hyperparameter


def embedded_data(function, limit: int = CONSTANT_BYTES) -> list[str]:
  """The data larger than `limit` bytes that a concrete function carries by value: a `Const` node in its
  graph or its function library, or a captured tensor (a value, not a variable's handle)."""
  graph_def = function.graph.as_graph_def()
  functions = [("(top)", graph_def.node)]
  functions += [(f.signature.name, f.node_def) for f in graph_def.library.function]
  found = [f"{name}/{node.name}: Const of {node.attr['value'].tensor.ByteSize()} bytes"
           for name, nodes in functions for node in nodes
           if node.op == "Const" and node.attr["value"].tensor.ByteSize() > limit]
  found += [f"captured {tensor.dtype.name}{tensor.shape}" for tensor in function.captured_inputs
            if tensor.dtype != tf.resource and tensor.shape.num_elements() * tensor.dtype.size > limit]
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


def test_the_data_scan_finds_a_probe_batch_held_in_the_graph_or_captured_by_value():
  """16 examples of 64 floats (4 KB): written into the graph, and captured as the Monitor held them before."""
  probe = tf.random.stateless_normal([16, 64], seed=[0, 0]).numpy()
  written = tf.function(lambda: tf.reduce_sum(tf.constant(probe))).get_concrete_function()
  captured_tensor = tf.constant(probe)
  captured = tf.function(lambda: tf.reduce_sum(captured_tensor)).get_concrete_function()
  held = tf.Variable(probe)
  in_variable = tf.function(lambda: tf.reduce_sum(held)).get_concrete_function()
  assert ["Const" in found for found in embedded_data(written)] == [True]
  assert ["captured float32" in found for found in embedded_data(captured)] == [True]
  assert not embedded_data(in_variable)


def test_the_monitors_functions_on_two_replicas_hold_no_large_constant_and_follow_the_tpu_rules(tmp_path):
  """Every Monitor function (statistics, gradient norm, sharpness, train subset), traced under a
  MirroredStrategy of 2 logical CPUs, with probes of 16 examples (4 KB each as constants)."""
  parsing.parse([QUICKSTART], TINY + ["Monitor.sharpness_examples=16", "Monitor.train_eval_examples=16",
                                      "Monitor.sharpness_every=1", "Trainer.regularizers=[@L2(), @L1()]",
                                      "L1.scale=1e-5"])
  run = builder.build(Trainer(), strategy=mirrored(2), model_dir=str(tmp_path))
  functions = run.monitor.concrete_functions()
  assert set(functions) == {"statistics", "gradient_norm", "statistics_and_gradient_norm", "sharpness",
                            "train_eval"}
  for name, function in functions.items():
    assert not embedded_data(function), name
    assert not tpu_violations(function.graph.as_graph_def()), name


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
def test_the_train_loop_with_cutmix_holds_no_float64(tmp_path):
  graph = _traced_train_loop(tmp_path, RESIDUAL + ["Trainer.regularizers=[@CutMix(), @SAM()]",
                                                   "CutMix.alpha=1.0", "SAM.rho=0.05"])
  assert not tpu_violations(graph)
