"""The model zoo: parameter counts, the input/output contract, bfloat16 + XLA training, weight-decay coverage.

Parameter counts are checked three ways: against a closed form written here from the papers'
architecture tables, against the exact count of the reference implementation each model follows,
and against the rounded figure the papers publish. Counting needs only the built Keras model (no
training); the XLA + `mixed_bfloat16` train steps run on small inputs, the large models' only when
`OCCAM_LARGE_MODEL_TESTS=1` (15 s to 2 minutes each on 2 cores, mostly XLA compilation: too much for
CI's budget).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import models
from tests import model_fixtures
from tests.model_fixtures import NUM_OUTPUTS, SMALL, build_small
from trainer.regularization.selectors import VariableSelector
from trainer.runtime import compat

# --- closed forms ---------------------------------------------------------------------------------


def _conv(kernel_size: int, c_in: int, c_out: int, *, bias: bool = False, rank: int = 2) -> int:
  return kernel_size**rank * c_in * c_out + (c_out if bias else 0)


def _norm(channels: int) -> int:  # BatchNorm or LayerNorm: scale and offset
  return 2 * channels


def _dense(n_in: int, n_out: int) -> int:
  return n_in * n_out + n_out


def cifar_resnet_count(depth: int, shortcut: str = "A", classes: int = 10) -> int:
  """He et al. (2016), Sec. 4.2: 16-filter stem, 3 stages of (depth - 2) / 6 blocks of 16/32/64 filters."""
  total, c_in = _conv(3, 3, 16) + _norm(16), 16
  for width in (16, 32, 64):
    for _ in range((depth - 2) // 6):
      total += _conv(3, c_in, width) + _conv(3, width, width) + 2 * _norm(width)
      if c_in != width and shortcut == "B":
        total += _conv(1, c_in, width) + _norm(width)
      c_in = width
  return total + _dense(64, classes)


def preact_count(stem: int, widths, blocks, *, final_norm: bool, classes: int = 10) -> int:
  """Pre-activation basic blocks: BN, conv3x3, BN, conv3x3, and a 1x1 projection where the width changes."""
  total, c_in = _conv(3, 3, stem), stem
  for width, num_blocks in zip(widths, blocks):
    for _ in range(num_blocks):
      total += _norm(c_in) + _conv(3, c_in, width) + _norm(width) + _conv(3, width, width)
      if c_in != width:
        total += _conv(1, c_in, width)
      c_in = width
  return total + (_norm(c_in) if final_norm else 0) + _dense(c_in, classes)


def resnet50_count(classes: int = 1000) -> int:
  """Bottleneck blocks (1x1, 3x3, 1x1 to 4x the width, BN after each), projection + BN in each first block."""
  total, c_in = _conv(7, 3, 64) + _norm(64), 64
  for inner, num_blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
    for block in range(num_blocks):
      out = 4 * inner
      total += (_conv(1, c_in, inner) + _conv(3, inner, inner) + _conv(1, inner, out)
                + 2 * _norm(inner) + _norm(out))
      if block == 0:
        total += _conv(1, c_in, out) + _norm(out)
      c_in = out
  return total + _dense(c_in, classes)


def vit_count(width: int, mlp_width: int, *, image: int = 224, patch: int = 16, depth: int = 12,
              classes: int = 1000) -> int:
  """Patch embedding, class token, patches + 1 position embeddings, 2 LN + q/k/v/out + MLP per block, head."""
  block = 2 * _norm(width) + 4 * _dense(width, width) + _dense(width, mlp_width) + _dense(mlp_width, width)
  tokens = (image // patch) ** 2 + 1
  return (_conv(patch, 3, width, bias=True) + width + tokens * width + depth * block + _norm(width)
          + _dense(width, classes))


def gru_count(hidden: int, steps: int = 40, classes: int = 10) -> int:
  """Bidirectional GRU on 1 input feature as PyTorch counts it (W_ih, W_hh, b_ih, b_hh), then linear."""
  per_direction = 3 * hidden * (1 + hidden) + 2 * 3 * hidden
  return 2 * per_direction + _dense(2 * hidden * steps, classes)


# Exact counts of the reference implementations each model follows: the standard PyTorch CIFAR ResNets
# (option A); the "PreAct ResNet-18" of the widely used PyTorch CIFAR code, which has no final BN-ReLU;
# the Wide ResNet authors' code; torchvision's resnet50; timm's vit_{small,tiny}_patch16_224; the
# MNIST-1D paper's models. Each is compared with the closed form above (no model is built).
REFERENCE_COUNTS = {
    "ResNet-20": (cifar_resnet_count(20), 269_722),
    "ResNet-32": (cifar_resnet_count(32), 464_154),
    "ResNet-56": (cifar_resnet_count(56), 853_018),
    "ResNet-110": (cifar_resnet_count(110), 1_727_962),
    "PreAct ResNet-18 (no final BN)": (preact_count(64, (64, 128, 256, 512), (2,) * 4, final_norm=False),
                                       11_171_146),
    "WRN-28-10": (preact_count(16, (160, 320, 640), (4,) * 3, final_norm=True), 36_479_194),
    "ResNet-50": (resnet50_count(), 25_557_032),
    "ViT-S/16": (vit_count(384, 1536), 22_050_664),
    "ViT-Ti/16": (vit_count(192, 768), 5_717_416),
    "MNIST-1D GRU": (gru_count(6), 5_134),
}


def test_closed_forms_match_the_reference_implementations():
  assert {name: closed for name, (closed, _) in REFERENCE_COUNTS.items()} == {
      name: reference for name, (_, reference) in REFERENCE_COUNTS.items()}


# name: (factory, kwargs, closed form, published figure as (value, unit), rounded as the paper or model
# card gives it). Each model is built at its published input size and class count (the defaults).
PARAMETER_COUNTS = {
    "ResNet-20": (models.CifarResNet, {"depth": 20}, cifar_resnet_count(20), (0.27, 1e6)),
    "ResNet-20 (option B)": (models.CifarResNet, {"depth": 20, "shortcut": "B"}, cifar_resnet_count(20, "B"),
                             (0.27, 1e6)),
    "ResNet-56": (models.CifarResNet, {"depth": 56}, cifar_resnet_count(56), (0.85, 1e6)),
    "ResNet-110": (models.CifarResNet, {"depth": 110}, cifar_resnet_count(110), (1.7, 1e6)),
    "PreAct ResNet-18": (models.PreActResNet, {},
                         preact_count(64, (64, 128, 256, 512), (2,) * 4, final_norm=True), (11.2, 1e6)),
    "WRN-28-10": (models.WideResNet, {}, preact_count(16, (160, 320, 640), (4,) * 3, final_norm=True),
                  (36.5, 1e6)),
    "ResNet-50": (models.ImageNetResNet, {}, resnet50_count(), (25.6, 1e6)),
    "ViT-S/16": (models.ViT, {}, vit_count(384, 1536), (22, 1e6)),
    "ViT-Ti/16": (models.ViT, {"variant": "Ti"}, vit_count(192, 768), (5.7, 1e6)),
    "MNIST-1D logistic": (models.MNIST1DLogistic, {}, _dense(40, 10), (410, 1)),
    "MNIST-1D MLP": (models.MNIST1DMLP, {}, _dense(40, 100) + _dense(100, 100) + _dense(100, 10),
                     (15_210, 1)),
    # Lengths 40 -> 19 -> 10 -> 5 (kernel 5/3/3, stride 2, one zero each side), 25 channels.
    "MNIST-1D CNN": (models.MNIST1DCNN, {}, _conv(5, 1, 25, bias=True, rank=1)
                     + 2 * _conv(3, 25, 25, bias=True, rank=1) + _dense(5 * 25, 10), (5_210, 1)),
    "MNIST-1D GRU": (models.MNIST1DGRU, {}, gru_count(6), (5_134, 1)),
}


def _trainable_count(model: tf.keras.Model) -> int:
  return int(sum(np.prod(v.shape) for v in model.trainable_variables))


@pytest.mark.parametrize("name", PARAMETER_COUNTS)
def test_parameter_count_matches_closed_form_and_paper(name):
  factory, kwargs, closed_form, (published, unit) = PARAMETER_COUNTS[name]
  count = _trainable_count(factory(**kwargs))
  assert count == closed_form
  decimals = len(repr(published).split(".")[1]) if isinstance(published, float) else 0
  assert round(count / unit, decimals) == published


def test_preact_final_activation_is_one_batch_norm_of_the_last_width():
  kwargs = {"input_shape": (8, 8, 3), "width": 4}
  with_final = _trainable_count(models.PreActResNet(**kwargs))
  assert with_final - _trainable_count(models.PreActResNet(final_activation=False, **kwargs)) == _norm(8 * 4)


def test_vit_gap_pooling_has_no_class_token_and_one_position_fewer():
  kwargs = {"input_shape": (16, 16, 3), "variant": "Ti", "depth": 1, "patch_size": 8}
  token, gap = models.ViT(**kwargs), models.ViT(pooling="gap", **kwargs)
  assert _trainable_count(token) - _trainable_count(gap) == 2 * 192
  assert "class_token" not in [layer.name for layer in gap.layers]


def test_option_a_shortcut_subsamples_and_pads_channels_with_zeros():
  from models.cifar_resnet import ZeroPadShortcut
  x = np.arange(2 * 4 * 4 * 2, dtype=np.float32).reshape(2, 4, 4, 2)
  y = np.asarray(ZeroPadShortcut(filters=6, strides=2)(x))
  expected = np.zeros((2, 2, 2, 6), np.float32)
  expected[..., 2:4] = x[:, ::2, ::2, :]
  np.testing.assert_array_equal(y, expected)


# --- the contract: input shape and class count from the data ----------------------------------------


@pytest.fixture
def small_models() -> dict[str, tf.keras.Model]:
  return model_fixtures.small_models()

def test_every_model_takes_its_input_shape_and_class_count_from_keywords(small_models):
  assert sorted(SMALL) == sorted(models.__all__)
  for name, model in small_models.items():
    shape = SMALL[name][2]
    outputs = model(tf.zeros((2, *shape)), training=False)
    assert tuple(outputs.shape) == (2, NUM_OUTPUTS), name


def test_mlp_with_an_input_shape_restores_checkpoints_of_the_mlp_without(tmp_path):
  """The builder will pass `input_shape`; a run saved before that must restore unchanged."""
  old = models.MLP(hidden_sizes=(4,))
  old(tf.ones((1, 8, 8, 1)))
  path = tf.train.Checkpoint(model=old).save(str(tmp_path / "ckpt"))
  new = models.MLP(input_shape=(8, 8, 1), hidden_sizes=(4,))
  new(tf.zeros((1, 8, 8, 1)))
  tf.train.Checkpoint(model=new).restore(path).assert_existing_objects_matched()
  assert [compat.variable_path(v) for v in new.variables] == [compat.variable_path(v) for v in old.variables]
  for restored, saved in zip(new.variables, old.variables):
    np.testing.assert_array_equal(restored.numpy(), saved.numpy())


def test_synchronized_batch_norm_reaches_every_batch_norm_layer():
  synchronized = type(compat.batch_normalization(synchronized=True, name="probe"))
  for name in ("CifarResNet", "PreActResNet", "WideResNet", "ImageNetResNet"):
    model = build_small(name, synchronized_batch_norm=True)
    norms = [layer for layer in model.layers if "BatchNormalization" in type(layer).__name__]
    assert norms and all(type(layer) is synchronized and getattr(layer, "synchronized", True)
                         for layer in norms), name


@pytest.mark.parametrize("factory, kwargs, message", [
    (models.CifarResNet, {"depth": 21}, "CifarResNet: depth must be 6n \\+ 2"),
    (models.CifarResNet, {"depth": 2}, "CifarResNet: depth must be an integer >= 8"),
    (models.CifarResNet, {"shortcut": "C"}, "CifarResNet: shortcut must be one of"),
    (models.WideResNet, {"depth": 27}, "WideResNet: depth must be 6n \\+ 4"),
    (models.PreActResNet, {"depth": 50}, "PreActResNet: depth must be one of"),
    (models.ImageNetResNet, {"depth": 18}, "ImageNetResNet: depth must be one of"),
    (models.ViT, {"variant": "XL"}, "ViT: variant must be one of"),
    (models.ViT, {"input_shape": (36, 36, 3)}, "not a multiple of patch_size=16"),
    (models.CifarResNet, {"input_shape": (32, 32)}, "input_shape must be \\(height, width, channels\\)"),
    (models.WideResNet, {"stochastic_depth_rate": 1.0}, "WideResNet: stochastic_depth_rate must be < 1"),
    (models.ViT, {"stochastic_depth_rate": -0.1}, "ViT: stochastic_depth_rate must be a finite number"),
    (models.MNIST1DMLP, {"num_outputs": 0}, "MNIST1DMLP: num_outputs must be an integer >= 1"),
])
def test_bad_arguments_name_the_model_and_the_argument(factory, kwargs, message):
  with pytest.raises(ValueError, match=message):
    factory(**kwargs)


# --- bfloat16 + XLA ---------------------------------------------------------------------------------


@pytest.fixture
def mixed_bfloat16():
  tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")


def _check_trains_with_xla_in_bfloat16(model: tf.keras.Model, input_shape, num_steps: int = 3) -> None:
  """A few SGD steps in one XLA-compiled function: finite float32 loss and logits, every weight moves."""
  tf.keras.utils.set_random_seed(0)
  x = tf.random.normal((8, *input_shape))
  y = tf.range(8) % model.output_shape[-1]
  variables = model.trainable_variables
  before = [v.numpy() for v in variables]
  optimizer = tf.keras.optimizers.SGD(0.05)

  @tf.function(jit_compile=True)
  def step():
    with tf.GradientTape() as tape:
      logits = model(x, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.cast(logits, tf.float32)))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss, logits

  losses = []
  for _ in range(num_steps):  # ViT's zero-initialized head passes gradients on from the second step
    loss, logits = step()
    losses.append(float(loss))
  assert logits.dtype == tf.float32
  assert np.all(np.isfinite(losses)), losses
  assert "bfloat16" in {layer.compute_dtype for layer in model.layers}
  assert {tf.as_dtype(v.dtype) for v in variables} == {tf.float32}
  unchanged = [compat.variable_path(v) for v, old in zip(variables, before) if np.array_equal(v.numpy(), old)]
  assert not unchanged, f"no update reached {unchanged}"


# name: (factory, kwargs, reduced input shape). Stochastic depth and dropout are on where the model has them.
# One ViT block covers the layers bfloat16 can upset (LayerNorm, attention softmax, GELU); convolutions
# and BatchNorm under XLA and bfloat16 are covered by test_distribution's jit_compile run of `ResNet`.
CHEAP_TRAIN = {
    "MNIST-1D logistic": (models.MNIST1DLogistic, {}, (40,)),
    "MNIST-1D MLP": (models.MNIST1DMLP, {}, (40,)),
    "MNIST-1D CNN": (models.MNIST1DCNN, {}, (40,)),
    "MNIST-1D GRU": (models.MNIST1DGRU, {}, (40,)),
    "ViT-Ti, one block": (models.ViT, {"variant": "Ti", "depth": 1, "stochastic_depth_rate": 0.1,
                                       "dropout": 0.1}, (32, 32, 3)),
}
LARGE_TRAIN = {
    "ResNet-20": (models.CifarResNet, {"stochastic_depth_rate": 0.1}, (32, 32, 3)),
    "PreAct ResNet-18": (models.PreActResNet, {"stochastic_depth_rate": 0.1}, (16, 16, 3)),
    "WRN-28-10": (models.WideResNet, {"dropout": 0.3, "stochastic_depth_rate": 0.1}, (16, 16, 3)),
    "ResNet-50": (models.ImageNetResNet, {"stochastic_depth_rate": 0.1}, (64, 64, 3)),
    "ViT-S/16": (models.ViT, {"stochastic_depth_rate": 0.1, "dropout": 0.1}, (32, 32, 3)),
    "ViT-Ti/16": (models.ViT, {"variant": "Ti", "stochastic_depth_rate": 0.1}, (32, 32, 3)),
}


@pytest.mark.parametrize("name", CHEAP_TRAIN)
def test_model_trains_with_xla_in_mixed_bfloat16(name, mixed_bfloat16):
  factory, kwargs, shape = CHEAP_TRAIN[name]
  _check_trains_with_xla_in_bfloat16(factory(input_shape=shape, num_outputs=10, **kwargs), shape)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("OCCAM_LARGE_MODEL_TESTS") != "1",
                    reason="set OCCAM_LARGE_MODEL_TESTS=1: 15 s to 2 min each on 2 cores")
@pytest.mark.parametrize("name", LARGE_TRAIN)
def test_large_model_trains_with_xla_in_mixed_bfloat16(name, mixed_bfloat16):
  factory, kwargs, shape = LARGE_TRAIN[name]
  _check_trains_with_xla_in_bfloat16(factory(input_shape=shape, num_outputs=10, **kwargs), shape)


# --- what weight decay covers -------------------------------------------------------------------------

# The default VariableSelector decays every rank >= 2 weight that is not a bias, a normalization
# parameter or a declared offset. ViT's class token (1, 1, width) and position embeddings
# (1, tokens, width) declare themselves offsets (like biases, they are added, not multiplied), so, as
# in big_vision (`.*/kernel$` only) and timm (`no_weight_decay`), exactly the kernels are decayed.


def _is_kernel(path: str) -> bool:
  return path.rsplit("/", 1)[-1] in ("kernel", "recurrent_kernel")


def test_default_selector_decays_exactly_the_kernels(small_models):
  """Every model's default selection is its kernels: no bias, normalization parameter or ViT offset."""
  for name, model in small_models.items():
    selected = {s.path for s in VariableSelector().select(model)}
    kernels = {compat.variable_path(v) for v in model.trainable_variables
               if _is_kernel(compat.variable_path(v))}
    assert selected == kernels, (name, selected ^ kernels)
  vit_paths = {compat.variable_path(v) for v in small_models["ViT"].trainable_variables}
  assert any(path.endswith("position_embedding") for path in vit_paths)  # present, and not selected

