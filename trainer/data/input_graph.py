"""Whether an input pipeline runs without Python: what a TPU host's input and the tf.data service need.

A reader that calls back into Python (`tf.numpy_function`: TFDS array_record records and memory-mapped
.npy rows read by index, `IndexedData.read`) leaves PyFunc nodes in the dataset's graph. Such a graph
runs where the Python interpreter that built it runs, and nowhere else: not on a Cloud TPU Node's
host (the graph is shipped to the TPU worker), not on a tf.data service worker. The check reads the
dataset's own graph, so it also finds Python that a user's parse function put there.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.data.arrays import ArrayData

PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")
GRAPH_ONLY_LOADER = ("TFRecord files, streamed in the graph: `Trainer.data = @tfrecord` (write them with "
                     "`trainer.data.write_tfrecord`), or a TFDS dataset prepared as TFRecord")


def python_ops(dataset: tf.data.Dataset) -> list[str]:
  """The op types of `dataset`'s graph (and its functions) that call Python, sorted, without repeats.

  The graph is TensorFlow's own serialization of the dataset (`_as_serialized_graph`, the form the
  tf.data service ships to its workers); private, so `tests/test_input_graph.py` checks it still finds
  a `tf.numpy_function`.
  """
  serialized = dataset._as_serialized_graph(  # pylint: disable=protected-access
      external_state_policy=tf.data.experimental.ExternalStatePolicy.WARN)
  graph = tf.compat.v1.GraphDef.FromString(serialized.numpy())
  nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
  return sorted({node.op for node in nodes if node.op in PYTHON_OPS})


def may_hold_python(split) -> bool:
  """Whether `split`'s pipeline can hold Python: every kind but arrays in memory (a constant in the
  graph, whose serialization for a large split costs as much as the split)."""
  return not (isinstance(split, ArrayData) and not split.memory_mapped)


def require_graph_only(name: str, dataset: tf.data.Dataset, runner: str) -> None:
  """Raises a ValueError naming split `name` and the loader to use if `dataset` holds Python that
  `runner` (e.g. '--strategy=tpu') cannot run."""
  found = python_ops(dataset)
  if found:
    raise ValueError(f"{runner} runs the input pipeline without Python, and the {name} split's pipeline "
                     f"calls Python ({', '.join(found)} ops: a reader such as TFDS array_record or "
                     f"memory-mapped .npy read by index, or a parse function that calls Python); read it "
                     f"from {GRAPH_ONLY_LOADER}")
