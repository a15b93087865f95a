"""From validated settings (`Trainer`) to a built `Run`: data, model, optimizer, programs, checkpoints.

`build` is the one place where an experiment's parts are created, in an order that matters: the
precision policy and the seed first, then the data (its factory may touch global random state, so
the weights are seeded again right before the model is built), then model and optimizer under the
strategy's scope, then the compiled programs and what saves and reports them. Every inconsistency
between the parts (a batch larger than the data, a model with too few outputs, an early-stopping
metric no evaluation writes) is an error here, before anything is written.

The `Run` it returns is a frozen description: the parts and nothing else, with the plain settings as a
frozen `RunConfig`; the settings object stays behind. Its checkpointers are opened apart
(`open_checkpointers`), by whoever trains or evaluates it. The driver (`trainer.loop.driver`) decides
what happens to the parts.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
from typing import Callable, Iterable, Iterator, Mapping

import gin
import numpy as np
import tensorflow as tf

from trainer.data import Splits, input_graph, pipeline
from trainer.data.preprocessing import ImagePreprocessing
from trainer.data.service import DataService
from trainer.loop import losses, schedules
from trainer.loop.early_stopping import EarlyStoppingState
from trainer.loop.programs import EvalProgram, TrainProgram
from trainer.loop.settings import RunConfig, Trainer
from trainer.metrics import hparams as hparams_lib
from trainer.metrics import tags
from trainer.metrics.monitor import Monitor, MonitorState
from trainer.metrics.summaries import SummaryWriters
from trainer.regularization import averaging, tfa_optimizers
from trainer.regularization import terms as terms_lib
from trainer.runtime import compat, devices
from trainer.runtime.checkpointing import Checkpointer


@dataclasses.dataclass(frozen=True)
class Run:
  """The built parts of one training run (see `build`); the settings object is not among them."""

  config: RunConfig
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
  terms: tuple  # bound to the model, in the order the config lists them
  roles: terms_lib.Roles  # the same terms by role
  train_program: TrainProgram
  eval_program: EvalProgram
  train_input: Callable[[int], Iterator]  # the distributed training stream from a step on
  eval_inputs: Mapping[str, Callable[[], Iterable]]  # 'eval' (validation) and 'test': one padded pass each
  monitor: MonitorState
  early_stopping: EarlyStoppingState | None
  writers: SummaryWriters
  hparams: dict
  averages: tuple = ()  # each weight average's state (`averaging.AveragedWeights`), in config order


@dataclasses.dataclass(frozen=True)
class Checkpointers:
  """Where a run's checkpoints go: the latest (`model_dir/checkpoints`) and the best (`model_dir/best`).

  Kept apart from `Run`: they are opened for one training (or evaluation) and closed after it.
  """

  latest: Checkpointer
  best: Checkpointer

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def build(settings: Trainer, *, strategy: tf.distribute.Strategy, model_dir: str,
          is_chief: bool = True) -> Run:
  """Builds all parts of a run of `settings` under `strategy`; raises ValueError/TypeError if inconsistent.

  `settings` is read, never changed: the terms are bound as copies, the Monitor's and early stopping's
  states are created from their specs. The seed takes one route: `config.seed`, pushed to what draws.
  """
  config = settings.config()
  precision = devices.resolve(devices.MIXED_PRECISION, config.mixed_precision, strategy)
  roles = _sort_terms(settings.regularizers)
  _check_batch_size(config, strategy.num_replicas_in_sync)
  tf.keras.mixed_precision.set_global_policy(precision or "float32")  # never leak a policy
  tf.keras.utils.set_random_seed(config.seed)
  splits = _call_factory("data", settings.data)
  classification = splits.num_classes is not None
  if settings.early_stopping is not None:
    settings.early_stopping.check_metric(tags.evaluated(classification=classification))
  preprocessing = settings.preprocessing or ImagePreprocessing()
  input_shape = _input_shape(splits, preprocessing, config.batch_size)
  if isinstance(strategy, tf.distribute.TPUStrategy):
    _require_graph_only_input(splits, preprocessing, config, "--strategy=tpu")
  monitor_spec = settings.monitor if settings.monitor is not None else Monitor()
  per_replica_batch = pipeline.per_replica_batch_size(config.batch_size, strategy.num_replicas_in_sync)
  train_examples = pipeline.first_examples(
      splits.train, max(monitor_spec.train_examples_needed, per_replica_batch), preprocessing)
  tf.keras.utils.set_random_seed(config.seed)  # whatever the data factory did to global random state
  with strategy.scope():
    model = _build_model(settings.model, splits, input_shape)
    _probe_loss(settings.loss, model, splits.name, train_examples, per_replica_batch)
    schedule, optimizer = _build_optimizer(settings, config, precision, model, strategy)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    early_stopping = settings.early_stopping.create_state() if settings.early_stopping is not None else None
    averages = _create_averages(roles, model, splits, preprocessing, config)
  terms, roles = _bind_terms(settings.regularizers, roles, model)
  train_program = TrainProgram(
      strategy=strategy, model=model, optimizer=optimizer, schedule=schedule, loss_fn=settings.loss,
      global_batch_size=config.batch_size, terms=roles, include_model_losses=bool(model.losses),
      classification=classification, step=step, seed=config.seed,
      jit_compile=devices.resolve(devices.JIT_COMPILE, config.jit_compile, strategy), averages=averages,
      on_device=preprocessing.on_device)
  eval_program = EvalProgram(strategy=strategy, model=model, loss_fn=settings.loss,
                             classification=classification, on_device=preprocessing.on_device)
  monitor = monitor_spec.create_state(strategy=strategy, model=model, terms=terms,
                                     train_examples=train_examples, loss_fn=settings.loss,
                                     penalties=train_program.penalties, classification=classification,
                                     seed=config.seed, train_steps=config.train_steps)
  hparams = hparams_lib.collect(model=model, optimizer=optimizer, schedule=schedule,
                                batch_size=config.batch_size, train_steps=config.train_steps,
                                seed=config.seed, data_name=splits.name, label_noise=splits.label_noise,
                                loss=losses.hparams(settings.loss), terms=terms)
  train_input, eval_inputs = _inputs(strategy, splits, preprocessing, config)
  return Run(config=config, strategy=strategy, model_dir=model_dir, is_chief=is_chief, splits=splits,
             preprocessing=preprocessing, input_shape=input_shape, model=model, schedule=schedule,
             optimizer=optimizer, step=step, terms=terms, roles=roles, train_program=train_program,
             eval_program=eval_program, train_input=train_input, eval_inputs=eval_inputs, monitor=monitor,
             early_stopping=early_stopping, writers=SummaryWriters(model_dir, enabled=is_chief),
             hparams=hparams, averages=averages)


def open_checkpointers(run: Run) -> Checkpointers:
  """The run's checkpointers (nothing is written until a save): everything a resume must continue
  goes into the latest checkpoint, the model alone into the best one."""
  early_stopping_state = {"early_stopping": run.early_stopping} if run.early_stopping is not None else {}
  if run.averages:  # absent without averages: the checkpoints of other runs stay as they were
    early_stopping_state["averages"] = {state.spec.name: state.trackable for state in run.averages}
  latest = Checkpointer(os.path.join(run.model_dir, "checkpoints"), step=run.step,
                        keep=run.config.keep_checkpoints, is_chief=run.is_chief, model=run.model,
                        # Every model variable by position: Keras 3 does not reach the dropout
                        # RNG state (SeedGenerator) through the model itself.
                        model_variables=[compat.tf_variable(v) for v in run.model.variables],
                        optimizer=run.optimizer, learning_rate_scale=run.schedule.scale,
                        **run.monitor.checkpoint_trackables(), **early_stopping_state)
  best = Checkpointer(os.path.join(run.model_dir, "best"), step=run.step, keep=1, is_chief=run.is_chief,
                      model=run.model)
  return Checkpointers(latest=latest, best=best)


def _sort_terms(regularizers) -> terms_lib.Roles:
  try:
    return terms_lib.by_role(regularizers)
  except (ValueError, TypeError) as error:
    raise type(error)(f"Trainer.regularizers: {error}") from error


def _check_batch_size(config: RunConfig, replicas: int) -> None:
  """The training batch splits evenly over the replicas (an evaluation batch is rounded up instead)."""
  try:
    pipeline.per_replica_batch_size(config.batch_size, replicas)
  except ValueError as error:
    raise ValueError(f"Trainer.batch_size: {error}") from error


def _create_averages(roles: terms_lib.Roles, model: tf.keras.Model, splits: Splits,
                     preprocessing: ImagePreprocessing, config: RunConfig) -> tuple:
  """The state of each weight average (under the strategy's scope). An average that recomputes BatchNorm
  statistics reads `statistics_batches` training batches (None: one epoch) in the run's order from step
  0, as one undistributed stream, so the statistics do not depend on the replica count; their features
  are what the train step feeds the model (`preprocessing.on_device` applied, as the step applies it)."""
  def statistics_batches(term) -> Callable[[], Iterable] | None:
    if not (term.recomputes_statistics and averaging.batch_norm_layers(model)):
      return None
    batches = term.statistics_batches
    if batches is None:
      size = splits.train.known_size
      if size is None:
        raise ValueError(f"Trainer.regularizers: {term.name} recomputes BatchNorm statistics on one epoch "
                         f"of {splits.name}, whose size is not known before training: bind "
                         f"{type(term).__name__}.statistics_batches")
      batches = -(-size // config.batch_size)
    return lambda: pipeline.train_dataset(
        splits.train, global_batch_size=config.batch_size, seed=config.seed, start_step=0,
        preprocessing=preprocessing).take(batches).map(lambda x, y: (preprocessing.on_device(x), y))

  return tuple(term.create_state(model, statistics_batches=statistics_batches(term))
               for term in roles.weight_averages)


def _input_shape(splits: Splits, preprocessing: ImagePreprocessing, batch_size: int) -> tuple[int, ...]:
  """One example's shape as the model sees it; the batch must fit in the training split."""
  train_size = splits.train.known_size  # None for a streamed split: not counted before training
  if train_size is not None and batch_size > train_size:
    raise ValueError(f"Trainer.batch_size={batch_size} exceeds the {train_size} "
                     f"training examples of {splits.name}")
  try:
    return preprocessing.output_shape(splits.train.example_shape)
  except ValueError as error:
    raise ValueError(f"Trainer.data={splits.name}: {error}") from error


def _build_model(factory, splits: Splits, input_shape: tuple[int, ...]) -> tf.keras.Model:
  """The model, called once (its variables exist), with at least one output per class."""
  model = _call_factory("model", factory,
                        **_from_data(factory, input_shape=input_shape, num_outputs=_num_outputs(splits)))
  outputs = model(tf.zeros((1,) + input_shape, tf.float32), training=False)
  if splits.num_classes is not None and outputs.shape[-1] < splits.num_classes:
    raise ValueError(f"Trainer.model {model.name} has {outputs.shape[-1]} outputs but {splits.name} "
                     f"has {splits.num_classes} classes (e.g. MLP.num_outputs = {splits.num_classes})")
  return model


def _build_optimizer(settings: Trainer, config: RunConfig, precision: str | None, model: tf.keras.Model,
                     strategy: tf.distribute.Strategy) -> tuple[schedules.Scaled, object]:
  """The schedule (a length left unbound, e.g. WarmupCosine.decay_steps, is train_steps) and the built
  optimizer, with loss scaling under mixed_float16 and tfa's decay list fed from the selector."""
  schedule = schedules.Scaled(schedules.for_run(settings.learning_rate, config.train_steps))
  optimizer = settings.optimizer(learning_rate=schedule)
  if precision == "mixed_float16":
    optimizer = compat.loss_scale_optimizer(optimizer)
  _refuse_builtin_weight_decay(optimizer)
  compat.build_optimizer(optimizer, model.trainable_variables)
  tfa_optimizers.bind(optimizer, model, strategy)  # tfa: the selector feeds decay_var_list
  return schedule, optimizer


def _bind_terms(regularizers, roles: terms_lib.Roles, model) -> tuple[tuple, terms_lib.Roles]:
  """Each term bound to `model` as a copy (the settings' terms stay unbound), in config order and by role."""
  bound = {id(term): copy.copy(term) for term in regularizers}
  for term in bound.values():
    term.bind(model)

  def pick(term):
    return None if term is None else bound[id(term)]

  return tuple(bound[id(term)] for term in regularizers), terms_lib.Roles(
      loss_terms=tuple(map(pick, roles.loss_terms)), update_terms=tuple(map(pick, roles.update_terms)),
      batch_transform=pick(roles.batch_transform), gradient_estimator=pick(roles.gradient_estimator))


def _inputs(strategy: tf.distribute.Strategy, splits: Splits, preprocessing: ImagePreprocessing,
            config: RunConfig) -> tuple[Callable[[int], Iterator], dict[str, Callable[[], Iterable]]]:
  """The run's input functions: the training stream from a step on (its order is a pure function of
  (seed, step)), and one padded pass over the validation ('eval') and the test split."""
  service = DataService()
  if service.enabled:
    _require_graph_only_input(splits, preprocessing, config, "the tf.data service (DataService.dispatcher)",
                              only_train=True)

  def train_input(start_step: int) -> Iterator:
    return iter(strategy.distribute_datasets_from_function(
        lambda context: service.distribute(pipeline.train_dataset(
            splits.train, global_batch_size=config.batch_size, seed=config.seed, start_step=start_step,
            input_context=context, preprocessing=preprocessing, service_sharding=service.enabled))))

  def eval_input(split) -> Callable[[], Iterable]:
    return lambda: strategy.distribute_datasets_from_function(
        lambda context: pipeline.eval_dataset(split, global_batch_size=config.eval_batch_size,
                                              input_context=context, preprocessing=preprocessing))

  return train_input, {"eval": eval_input(splits.validation), "test": eval_input(splits.test)}


def _require_graph_only_input(splits: Splits, preprocessing: ImagePreprocessing, config: RunConfig,
                              runner: str, only_train: bool = False) -> None:
  """Refuses a split (the training split if `only_train`) whose input pipeline calls Python, which
  `runner` cannot run (`input_graph`)."""
  for name, split in splits.named_splits()[:1 if only_train else 3]:
    if input_graph.may_hold_python(split):
      dataset = (pipeline.train_dataset(split, global_batch_size=config.batch_size, seed=config.seed,
                                        start_step=0, preprocessing=preprocessing) if name == "train"
                 else pipeline.eval_dataset(split, global_batch_size=config.eval_batch_size,
                                            preprocessing=preprocessing))
      input_graph.require_graph_only(f"{splits.name} {name}", dataset, runner)


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
