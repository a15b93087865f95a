"""Tests for `trainer.selectors`: the structural default rule, regex overrides, scales and errors.

Layers get explicit names so that paths are the same on Keras 2 (`hidden/kernel`) and Keras 3
(`sequential/hidden/kernel`); regexes below anchor on the layer name only.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from trainer.regularization import selectors

layers = tf.keras.layers


def _mlp() -> tf.keras.Model:
  return tf.keras.Sequential(
      [tf.keras.Input((4,)), layers.Dense(8, name="hidden"), layers.Dense(3, name="out")],
      name="mlp")


def _conv_model() -> tf.keras.Model:
  return tf.keras.Sequential([
      tf.keras.Input((6, 6, 2)),
      layers.Conv2D(4, 3, name="conv1"),
      layers.BatchNormalization(name="bn"),
      layers.Conv2D(4, 1, use_bias=False, name="conv2"),
      layers.LayerNormalization(name="ln"),
      layers.GroupNormalization(groups=2, name="gn"),
      layers.Flatten(name="flat"),
      layers.Dense(3, name="head"),
  ], name="convnet")


class _VectorScale(layers.Layer):
  """A layer with a rank-1 and a rank-0 trainable weight that are not called `bias`."""

  def build(self, input_shape):
    self.vector = self.add_weight(name="vector", shape=(input_shape[-1],), initializer="ones")
    self.scalar = self.add_weight(name="scalar", shape=(), initializer="ones")

  def call(self, inputs):
    return inputs * self.vector * self.scalar


def _ids(variables) -> list[int]:
  return [id(v) for v in variables]


def _selected_ids(model, **kwargs) -> list[int]:
  return [id(s.variable) for s in selectors.VariableSelector(**kwargs).select(model)]


def test_mlp_selects_exactly_the_kernels():
  model = _mlp()
  selected = selectors.VariableSelector().select(model)
  kernels = [model.layers[0].kernel, model.layers[1].kernel]
  assert _ids(s.variable for s in selected) == _ids(kernels)
  assert [s.multiplier for s in selected] == [1.0, 1.0]
  assert selected[0].path.endswith("hidden/kernel")
  assert _ids(selectors.excluded_variables(model)) == _ids(
      [model.layers[0].bias, model.layers[1].bias])


def test_conv_model_excludes_biases_and_all_normalization_parameters():
  model = _conv_model()
  by_name = {layer.name: layer for layer in model.layers}
  kernels = [by_name["conv1"].kernel, by_name["conv2"].kernel, by_name["head"].kernel]
  assert _selected_ids(model) == _ids(kernels)
  expected_excluded = ([by_name["conv1"].bias] + by_name["bn"].trainable_weights
                       + by_name["ln"].trainable_weights + by_name["gn"].trainable_weights
                       + [by_name["head"].bias])
  assert sorted(_ids(selectors.excluded_variables(model))) == sorted(_ids(expected_excluded))


def test_rank_at_most_one_is_excluded_even_without_the_bias_name():
  model = tf.keras.Sequential(
      [tf.keras.Input((3,)), _VectorScale(name="scale"), layers.Dense(2, name="out")])
  assert _selected_ids(model) == _ids([model.layers[1].kernel])
  assert len(selectors.excluded_variables(model)) == 3  # vector, scalar, out/bias


def test_include_adds_excluded_variables():
  model = _conv_model()
  by_name = {layer.name: layer for layer in model.layers}
  selected = _selected_ids(model, include=[r"head/bias", r"bn/gamma"])
  assert id(by_name["head"].bias) in selected
  assert id(by_name["bn"].gamma) in selected
  assert id(by_name["bn"].beta) not in selected
  assert len(selected) == 5


def test_exclude_removes_and_wins_over_include():
  model = _mlp()
  assert _selected_ids(model, exclude=[r"out/"]) == _ids([model.layers[0].kernel])
  assert _selected_ids(model, include=[r"out/bias"], exclude=[r"out/"]) == _ids(
      [model.layers[0].kernel])


def test_exclude_biases_and_norms_false_selects_every_trainable_variable():
  model = _conv_model()
  assert _selected_ids(model, exclude_biases_and_norms=False) == _ids(model.trainable_variables)


def test_non_trainable_and_shared_layers():
  shared = layers.Dense(4, name="shared")
  frozen = layers.Dense(4, name="frozen")
  inputs = tf.keras.Input((4,))
  model = tf.keras.Model(inputs, shared(frozen(shared(inputs))))
  frozen.trainable = False
  assert _selected_ids(model) == _ids([shared.kernel])


def test_layer_scales_multiply_per_layer_and_nest():
  block = tf.keras.Sequential([tf.keras.Input((4,)), layers.Dense(4, name="inner")], name="block")
  inputs = tf.keras.Input((4,))
  model = tf.keras.Model(inputs, layers.Dense(2, name="head")(block(inputs)))
  selected = selectors.VariableSelector(layer_scales={"block": 2.0, "inner": 3.0, "head": 0.5}
                                        ).select(model)
  multipliers = {s.path.split("/")[-2]: s.multiplier for s in selected}
  assert multipliers == {"inner": 6.0, "head": 0.5}


def test_describe_lists_count_params_paths_and_multipliers():
  model = _mlp()
  text = selectors.describe(selectors.VariableSelector(layer_scales={"out": 0.5}).select(model))
  assert text.startswith("2 variables, 56 parameters:")  # 4*8 + 8*3
  assert "hidden/kernel (4, 8) x1" in text
  assert "out/kernel (8, 3) x0.5" in text


@pytest.mark.parametrize("argument", ["include", "exclude"])
def test_bad_regex_names_the_regex_and_the_re_error(argument):
  with pytest.raises(ValueError, match=rf"{argument} regex '\(kernel' does not compile: "
                                       r"missing \), unterminated subpattern"):
    selectors.VariableSelector(**{argument: ["kernel", "(kernel"]})


def test_unknown_layer_scale_lists_the_model_layers():
  with pytest.raises(ValueError, match=r"layer_scales names layers not in the model: \['nope'\]; "
                                       r"the model's layers are: .*'hidden'.*'out'"):
    selectors.VariableSelector(layer_scales={"nope": 2.0}).select(_mlp())


@pytest.mark.parametrize("scale", [-1.0, float("nan"), float("inf"), "2"])
def test_invalid_layer_scale_is_rejected(scale):
  with pytest.raises(ValueError, match=r"layer_scales\['hidden'\] must be a finite number >= 0, "
                                       rf"got {scale!r}"):
    selectors.VariableSelector(layer_scales={"hidden": scale})


def test_empty_selection_is_an_error_listing_available_paths():
  with pytest.raises(ValueError, match=r"selector matched no variables.*available trainable "
                                       r"variable paths:\n  \S*hidden/kernel\n  \S*hidden/bias"):
    selectors.VariableSelector(exclude=[r"kernel"]).select(_mlp())


def test_default_rule_covers_embedding_tables_and_leaves_out_prelu_slopes():
  """He et al. (2015) do not decay PReLU slopes; a conv PReLU's alpha is rank 3, so rank alone misses it."""
  model = tf.keras.Sequential([
      tf.keras.Input((5,), dtype="int32"),
      layers.Embedding(10, 4, name="embed"),
      layers.Reshape((5, 4, 1)),
      layers.Conv2D(3, 2, name="conv"),
      layers.PReLU(name="conv_prelu"),
      layers.Flatten(),
      layers.Dense(2, name="out"),
      layers.PReLU(name="dense_prelu"),
  ], name="prelu_model")
  assert [len(v.shape) for v in model.trainable_variables].count(3) == 1  # the conv PReLU's alpha (4, 3, 3)
  selected = {s.path.split("/")[-2] for s in selectors.VariableSelector().select(model)}
  assert selected == {"embed", "conv", "out"}
  everything = selectors.VariableSelector(exclude_biases_and_norms=False).select(model)
  assert {s.path.split("/")[-2] for s in everything} >= {"conv_prelu", "dense_prelu"}
