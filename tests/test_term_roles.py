"""The four roles of a regularization term: how `Trainer.regularizers` is sorted, what each term declares,
and that a new batch transform or gradient estimator plugs into the train step without changing it."""

from __future__ import annotations

import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO
from trainer.loop import losses, schedules
from trainer.loop.programs import TrainProgram
from trainer.metrics import tags
from trainer.regularization import terms
from trainer.regularization.averaging import EMA, SWA
from trainer.regularization.mixing import CutMix, Mixup, MixupCutMix
from trainer.regularization.sharpness_aware import SAM
from trainer.runtime import compat


def test_regularizers_are_sorted_by_role_in_the_order_given():
  l2, l1 = terms.L2(1e-4), terms.L1(1e-5)
  decay, prox = terms.DecoupledWeightDecay(1e-3), terms.ProximalL1(1e-5)
  mixup, sam = Mixup(0.2), SAM(0.05)
  roles = terms.by_role([sam, l2, prox, mixup, l1, decay])
  assert roles == terms.Roles(loss_terms=(l2, l1), update_terms=(prox, decay), batch_transform=mixup,
                              gradient_estimator=sam)
  assert roles.train_tags == ("train/mixing_lambda", "sharpness/sam_train",
                              "sharpness/sam_train_perturbation_norm")
  assert terms.by_role([]) == terms.Roles()


@pytest.mark.parametrize("regularizers, error, message", [
    ([Mixup(0.2), CutMix(1.0)], ValueError,
     r"at most one batch transform \(Mixup, CutMix\) per run, got \['mixup', 'cutmix'\]"),
    ([SAM(0.05), SAM(0.1, name="asam", adaptive=True)], ValueError,
     r"at most one gradient estimator \(SAM, ASAM\) per run, got \['sam', 'asam'\]"),
    ([terms.L2], TypeError, r"<class 'trainer.regularization.terms.L2'> is not a regularization term"),
])
def test_a_second_batch_transform_or_estimator_and_a_non_term_are_refused(regularizers, error, message):
  with pytest.raises(error, match=message):
    terms.by_role(regularizers)


@pytest.mark.parametrize("term, settings", [
    (terms.L2(1e-4), {"scale": 1e-4}),
    (terms.L1(2e-5), {"scale": 2e-5}),
    (terms.DecoupledWeightDecay(1e-3, convention="schedule_multiplier"),
     {"rate": 1e-3, "convention": "schedule_multiplier"}),
    (terms.ProximalL1(3e-5), {"scale": 3e-5}),
    (Mixup(0.4), {"alpha": 0.4, "prob": 1.0}),
    (CutMix(1.0, prob=0.5), {"alpha": 1.0, "prob": 0.5}),
    (MixupCutMix(), {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5}),
    (SAM(0.05), {"rho": 0.05, "adaptive": False, "perturbation": "global"}),
    (SAM(0.5, adaptive=True, eta=0.02, perturbation="per_replica"),
     {"rho": 0.5, "adaptive": True, "eta": 0.02, "scaled": "kernels", "perturbation": "per_replica"}),
    (EMA(0.99, warmup=True, statistics="raw"), {"decay": 0.99, "warmup": True, "statistics": "raw"}),
    (SWA(100, 10), {"start_step": 100, "every": 10}),
])
def test_each_term_declares_its_hparams_and_registered_tags(term, settings):
  assert term.hparams() == {"type": type(term).__name__, **settings}
  for tag in getattr(term, "train_tags", ()):
    assert tags.find(tag).matches(tag)  # raises UnknownTagError for an unregistered tag


# ----- a new role implementation needs no change to the step ---------------------------------------

class _TwoPassMean(terms.GradientEstimator):
  """A gradient estimator written only against the protocol: the mean of two passes at `w`."""

  def __init__(self):
    super().__init__(name="two_pass_mean", selector=None)
    self.passes_traced = 0

  def _settings(self) -> str:
    return ""

  def _hparams(self) -> dict:
    return {}

  def estimate(self, compute, metrics):
    first, second = compute(), compute()
    self.passes_traced += 2
    return first._replace(gradients=[(a + b) / 2.0 for a, b in zip(first.gradients, second.gradients)])


class _Negate(terms.BatchTransform):
  """A batch transform written only against the protocol: features times -1, scored as usual."""

  def __init__(self):
    super().__init__(name="negate", selector=None)

  def _settings(self) -> str:
    return ""

  def _hparams(self) -> dict:
    return {}

  def __call__(self, features, labels, *, seed, step, replica):
    del labels, seed, step, replica
    return _Negated(-features)

  def loss(self, loss_fn, labels, outputs, batch):
    return loss_fn(labels, outputs)

  def correct(self, correct_fn, labels, outputs, batch):
    return correct_fn(labels, outputs)


class _Negated(tuple):
  def __new__(cls, features):
    return super().__new__(cls, (features,))

  @property
  def features(self):
    return self[0]


def _trained_weights(regularizers, features: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
  tf.keras.utils.set_random_seed(1)
  model = tf.keras.Sequential([tf.keras.layers.Dense(5, activation="tanh"), tf.keras.layers.Dense(3)])
  model(tf.zeros((1, 4)))
  schedule = schedules.Scaled(schedules.Constant(0.1))
  optimizer = tf.keras.optimizers.SGD(learning_rate=schedule)
  compat.build_optimizer(optimizer, model.trainable_variables)
  for term in regularizers:
    term.bind(model)
  program = TrainProgram(strategy=tf.distribute.get_strategy(), model=model, optimizer=optimizer,
                         schedule=schedule, loss_fn=losses.softmax_cross_entropy, global_batch_size=8,
                         terms=terms.by_role(regularizers), include_model_losses=False, classification=True,
                         step=tf.Variable(0, dtype=tf.int64), seed=0)
  dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
  assert int(program.loop(iter(dataset), tf.constant(len(features) // 8))) == -1
  return [v.numpy() for v in model.trainable_variables]


def test_new_estimator_and_transform_plug_into_the_step_unchanged():
  """The mean of two passes at the same weights is the plain gradient (to float32 rounding: TensorFlow's
  graph rewrites may compute the mean otherwise than (g + g) / 2; measured 3e-8 after 4 steps), and
  negating the features in the step is training on the negated data, bit for bit."""
  rng = np.random.default_rng(0)
  features = rng.normal(size=(32, 4)).astype(np.float32)
  labels = rng.integers(0, 3, size=32).astype(np.int32)
  plain = _trained_weights([terms.L2(1e-3)], features, labels)
  estimator = _TwoPassMean()
  for got, want in zip(_trained_weights([terms.L2(1e-3), estimator], features, labels), plain):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  assert estimator.passes_traced == 2  # the step asked the estimator, which ran two passes
  negated = _trained_weights([terms.L2(1e-3)], -features, labels)
  for got, want in zip(_trained_weights([_Negate(), terms.L2(1e-3)], features, labels), negated):
    np.testing.assert_array_equal(got, want)
  assert not np.array_equal(negated[0], plain[0])  # the transform did act


def _documented_batch_transform():
  """`DropExamples`, the example of docs/ARCHITECTURE.md ("A new batch transform"), as a user pastes it."""
  text = open(os.path.join(REPO, "docs", "ARCHITECTURE.md")).read()
  section = text[text.index("**A new batch transform**"):]
  code = section[section.index("```python") + len("```python"):]
  namespace: dict = {"__name__": "docs_architecture_example"}
  with gin.unlock_config():
    exec(compile(code[:code.index("```")], "docs/ARCHITECTURE.md", "exec"), namespace)  # noqa: S102
  return namespace["DropExamples"]


def test_the_documented_batch_transform_plugs_into_the_step():
  """keep=1 keeps every example at weight 1: plain training bit for bit; keep=0.5 trains otherwise."""
  drop_examples = _documented_batch_transform()
  rng = np.random.default_rng(0)
  features = rng.normal(size=(32, 4)).astype(np.float32)
  labels = rng.integers(0, 3, size=32).astype(np.int32)
  plain = _trained_weights([terms.L2(1e-3)], features, labels)
  for got, want in zip(_trained_weights([drop_examples(1.0), terms.L2(1e-3)], features, labels), plain):
    np.testing.assert_array_equal(got, want)
  half = drop_examples(0.5)
  assert half.hparams() == {"type": "DropExamples", "keep": 0.5}
  assert half.train_tags == ("train/kept_fraction",)
  assert not np.array_equal(_trained_weights([half, terms.L2(1e-3)], features, labels)[0], plain[0])
