"""From validated settings (`Trainer`) to a built `Run`: data, model, optimizer, programs, checkpoints.

`build` is the one place where an experiment's parts are created, in an order that matters: the
precision policy and the seed first, then the data (its factory may touch global random state, so
the weights are seeded again right before the model is built), then model and optimizer under the
strategy's scope, then the compiled programs and what saves and reports them. Every inconsistency
between the parts (a batch larger than the data, a model with too few outputs, an early-stopping
metric no evaluation writes) is an error here, before anything is written.

The `Run` it returns is a frozen description: the parts and nothing else. The driver
(`trainer.loop.driver`) decides what happens to them.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

import gin
import numpy as np
import tensorflow as tf

from trainer.data import Splits, pipeline
from trainer.data.preprocessing import ImagePreprocessing
from trainer.loop import schedules
from trainer.loop.early_stopping import EarlyStopping
from trainer.loop.programs import EvalProgram, TrainProgram
from trainer.loop.trainer import Trainer
from trainer.metrics import hparams as hparams_lib
from trainer.metrics import tags
from trainer.metrics.monitor import Monitor
from trainer.metrics.summaries import SummaryWriters
from trainer.regularization import terms as terms_lib
from trainer.regularization import tfa_optimizers
from trainer.runtime import compat
from trainer.runtime.checkpointing import Checkpointer


@dataclasses.dataclass(frozen=True)
class Run:
  """The built parts of one training run (see `build`)."""

  settings: Trainer
  strategy: tf.distribute.Strategy
  model_dir: str
  is_chief: bool
  splits: Splits
  preprocessing: ImagePreprocessing
  input_shape: tuple[int, ...]  # one example as the model sees it (after preprocessing)
  model: tf.keras.Model
  schedule: schedules.Scaled
  optimizer: object
  step: tf.Variable
  terms: tuple
  train_program: TrainProgram
  eval_program: EvalProgram
  monitor: Monitor
  early_stopping: EarlyStopping | None
  checkpointer: Checkpointer
  best_checkpointer: Checkpointer
  writers: SummaryWriters
  hparams: dict

  @property
  def update_terms(self) -> tuple:
    return tuple(t for t in self.terms if isinstance(t, terms_lib.UpdateTerm))


def build(settings: Trainer, *, strategy: tf.distribute.Strategy, model_dir: str,
          is_chief: bool = True) -> Run:
  """Builds all parts of a run of `settings` under `strategy`; raises ValueError/TypeError if inconsistent."""
  replicas = strategy.num_replicas_in_sync
  try:  # (an evaluation batch is rounded up to a multiple of the replicas instead)
    pipeline.per_replica_batch_size(settings.batch_size, replicas)
  except ValueError as error:
    raise ValueError(f"Trainer.batch_size: {error}") from error
  tf.keras.mixed_precision.set_global_policy(settings.mixed_precision or "float32")  # never leak a policy
  early_stopping = settings.early_stopping
  tf.keras.utils.set_random_seed(settings.seed)
  splits = _call_factory("data", settings.data)
  classification = splits.num_classes is not None
  if early_stopping is not None:
    early_stopping.check_metric(tags.evaluated(classification=classification))
  train_size = splits.train.known_size  # None for a streamed split: not counted before training
  if train_size is not None and settings.batch_size > train_size:
    raise ValueError(f"Trainer.batch_size={settings.batch_size} exceeds the {train_size} "
                     f"training examples of {splits.name}")
  preprocessing = settings.preprocessing or ImagePreprocessing()
  try:
    input_shape = preprocessing.output_shape(splits.train.example_shape)
  except ValueError as error:
    raise ValueError(f"Trainer.data={splits.name}: {error}") from error
  monitor = settings.monitor if settings.monitor is not None else Monitor()
  train_examples = pipeline.first_examples(
      splits.train, max(monitor.train_examples_needed, pipeline.per_replica_batch_size(settings.batch_size,
                                                                                        replicas)),
      preprocessing)
  tf.keras.utils.set_random_seed(settings.seed)  # whatever the data factory did to global random state
  with strategy.scope():
    model = _call_factory("model", settings.model,
                          **_from_data(settings.model, input_shape=input_shape,
                                       num_outputs=_num_outputs(splits)))
    outputs = model(tf.zeros((1,) + input_shape, tf.float32), training=False)
    if classification and outputs.shape[-1] < splits.num_classes:
      raise ValueError(f"Trainer.model {model.name} has {outputs.shape[-1]} outputs but {splits.name} "
                       f"has {splits.num_classes} classes (e.g. MLP.num_outputs = {splits.num_classes})")
    _probe_loss(settings.loss, model, splits.name, train_examples,
                pipeline.per_replica_batch_size(settings.batch_size, replicas))
    # The schedule follows the run: a length left unbound (WarmupCosine.decay_steps) is train_steps.
    schedule = schedules.Scaled(schedules.for_run(settings.learning_rate, settings.train_steps))
    optimizer = settings.optimizer(learning_rate=schedule)
    if settings.mixed_precision == "mixed_float16":
      optimizer = compat.loss_scale_optimizer(optimizer)
    _refuse_builtin_weight_decay(optimizer)
    compat.build_optimizer(optimizer, model.trainable_variables)
    tfa_optimizers.bind(optimizer, model, strategy)  # tfa: the selector feeds decay_var_list
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
  terms = settings.regularizers
  for term in terms:
    term.bind(model)
  train_program = TrainProgram(
      strategy=strategy, model=model, optimizer=optimizer, schedule=schedule, loss_fn=settings.loss,
      global_batch_size=settings.batch_size,
      loss_terms=[t for t in terms if isinstance(t, terms_lib.LossTerm)],
      update_terms=[t for t in terms if isinstance(t, terms_lib.UpdateTerm)],
      include_model_losses=bool(model.losses), classification=classification, step=step,
      seed=settings.seed, jit_compile=settings.jit_compile)
  eval_program = EvalProgram(strategy=strategy, model=model, loss_fn=settings.loss,
                             classification=classification)
  monitor.bind(strategy=strategy, model=model, terms=terms, train_examples=train_examples,
               loss_fn=settings.loss, penalties=train_program.penalties, classification=classification,
               seed=settings.seed)
  early_stopping_state = {"early_stopping": early_stopping} if early_stopping is not None else {}
  checkpointer = Checkpointer(os.path.join(model_dir, "checkpoints"), step=step,
                              keep=settings.keep_checkpoints, is_chief=is_chief, model=model,
                              # Every model variable by position: Keras 3 does not reach the dropout
                              # RNG state (SeedGenerator) through the model itself.
                              model_variables=[compat.tf_variable(v) for v in model.variables],
                              optimizer=optimizer, learning_rate_scale=schedule.scale,
                              **monitor.checkpoint_trackables(), **early_stopping_state)
  best_checkpointer = Checkpointer(os.path.join(model_dir, "best"), step=step, keep=1, is_chief=is_chief,
                                   model=model)
  hparams = hparams_lib.collect(model=model, optimizer=optimizer, schedule=schedule, settings=settings,
                                data_name=splits.name, terms=terms)
  return Run(settings=settings, strategy=strategy, model_dir=model_dir, is_chief=is_chief, splits=splits,
             preprocessing=preprocessing, input_shape=input_shape, model=model, schedule=schedule,
             optimizer=optimizer, step=step, terms=terms,
             train_program=train_program, eval_program=eval_program, monitor=monitor,
             early_stopping=early_stopping, checkpointer=checkpointer, best_checkpointer=best_checkpointer,
             writers=SummaryWriters(model_dir, enabled=is_chief), hparams=hparams)


def _num_outputs(splits: Splits) -> int:
  """Classes for classification; for regression, the targets per example."""
  if splits.num_classes is not None:
    return splits.num_classes
  return int(np.prod(splits.train.label_shape))


def _from_data(factory, **values) -> dict:
  """The `values` that `factory` takes as keyword arguments and the config leaves unbound.

  Models take their input shape and output count from the data (`input_shape`, `num_outputs`), so
  a config need not repeat them; a binding (`MLP.num_outputs = 1`) still wins.
  """
  try:
    parameters = inspect.signature(factory).parameters
  except (TypeError, ValueError):  # a callable without a signature: pass nothing
    return {}
  name = getattr(factory, "__name__", None)
  chosen = {}
  for key, value in values.items():
    if key not in parameters:
      continue
    try:
      gin.query_parameter(f"{name}.{key}")
    except ValueError:  # unbound (or not a gin configurable): the data decide
      chosen[key] = value
  return chosen


def _call_factory(name: str, factory, **arguments):
  """`factory(**arguments)`; its errors are prefixed by the binding that names it (`Trainer.model=@MLP`).

  The error comes from the factory's own gin bindings (`MLP.hidden_sizes=(-3,)`), which the message
  of a Keras or NumPy error would not name.
  """
  try:
    return factory(**arguments)
  except Exception as error:  # whatever a user's factory raises is a configuration error of that factory
    label = getattr(factory, "__name__", type(factory).__name__)
    raise ValueError(f"Trainer.{name}=@{label} failed: {type(error).__name__}: {_first_line(error)} "
                     f"(check the {label}.* bindings)") from error


def _probe_loss(loss_fn, model: tf.keras.Model, data_name: str, train_examples: tuple[np.ndarray, np.ndarray],
                examples: int) -> None:
  """Runs the model and `Trainer.loss` on one per-replica batch of training examples, so that a loss that
  does not fit the labels (a regression loss on class ids) fails here, before anything is written, and
  not when the train step is traced."""
  features, labels = (values[:examples] for values in train_examples)
  outputs = model(tf.constant(features), training=False)
  try:
    values = loss_fn(tf.constant(labels), tf.cast(outputs, tf.float32))
    values.shape.assert_is_compatible_with([len(labels)])
  except Exception as error:  # a shape, dtype or rank mismatch: ValueError, InvalidArgumentError, ...
    label = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    raise ValueError(
        f"Trainer.loss=@{label} does not fit {data_name}: labels {labels.dtype.name}"
        f"{list(labels.shape[1:])} per example, model outputs {list(outputs.shape[1:])} "
        f"({type(error).__name__}: {_first_line(error)}). The loss must map (labels, outputs) to one value "
        "per example.") from error


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else "no message"


def _refuse_builtin_weight_decay(optimizer) -> None:
  """Refuses a Keras optimizer's own `weight_decay`: it would bypass the selector, unlogged.

  Keras applies it to every variable, biases and normalization parameters included, and no
  `optimizer/weight_decay` or HParams entry would show it. tfa's decoupled optimizers are exempt:
  Occam feeds their decay from the selector (trainer/regularization/tfa_optimizers.py).
  """
  inner = compat.inner_optimizer(optimizer)
  decay = getattr(inner, "weight_decay", None)
  if tfa_optimizers.is_decoupled(inner) or decay is None or (isinstance(decay, (int, float)) and decay == 0):
    return
  name = type(inner).__name__
  raise ValueError(
      f"Trainer.optimizer {name} has its own weight_decay={decay}, which Keras applies to every variable "
      f"(biases and normalization parameters too), outside Occam's variable selector and unlogged. Use "
      f"`Trainer.regularizers = [@DecoupledWeightDecay()]` with `DecoupledWeightDecay.rate = {decay}` (its "
      f"default convention 'lr_coupled' is Keras' update), or bind `{name}.weight_decay = 0`.")
