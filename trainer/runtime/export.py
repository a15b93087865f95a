"""SavedModel export for inference: one `serving_default` signature, the same on Keras 2 and 3.

The model is wrapped in a `tf.Module` with an explicit input signature (features -> outputs, in
inference mode) and saved with `tf.saved_model.save`, which both Keras versions support; Keras 3's
`model.export` and Keras 2's `model.save` would produce different artifacts. The export is written
to a temporary directory and swapped in, so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


class _Serving(tf.Module):
  def __init__(self, model: tf.keras.Model, feature_shape: Sequence[int]):
    super().__init__()
    self.model = model
    self.serve = tf.function(
        self._serve, input_signature=[tf.TensorSpec([None, *feature_shape], tf.float32, name="features")])

  def _serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
    return {"outputs": tf.cast(self.model(features, training=False), tf.float32)}


def export_saved_model(model: tf.keras.Model, path: str, feature_shape: Sequence[int]) -> str:
  """Exports `model` to `path` (replaced atomically); load with `tf.saved_model.load(path).serve(x)`."""
  module = _Serving(model, feature_shape)
  temporary, previous = path + ".tmp", path + ".old"
  _remove_tree(temporary)
  tf.saved_model.save(module, temporary, signatures={"serving_default": module.serve})
  _remove_tree(previous)
  if tf.io.gfile.exists(path):
    tf.io.gfile.rename(path, previous)
  tf.io.gfile.rename(temporary, path)
  _remove_tree(previous)
  return path


def _remove_tree(path: str) -> None:
  """Removes the directory `path` if it exists (through `tf.io.gfile`: local and remote alike)."""
  if tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(path)
