"""`Trainer`: the gin root of an experiment. It holds validated settings and builds nothing.

`gin` calls `Trainer()` with the bindings of the config; `trainer.loop.builder.build` then turns
the settings into a `Run` (model, data, optimizer, programs) under the distribution strategy's
scope, and `trainer.loop.driver` trains it. Everything that creates variables or draws random
numbers (model, data, optimizer) is bound as a *factory*, without parentheses (`Trainer.model =
@MLP`), so that the builder seeds first and builds it under the right scope; configurables bound
with parentheses (terms, `Monitor`, `EarlyStopping`) are specs the builder creates state from, and
are never changed by it. What the run needs of the plain settings at run time is `RunConfig`, a
frozen record (`Trainer.config()`): nothing reaches back into `Trainer`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import gin
import tensorflow as tf

from trainer.common import checks
from trainer.data.preprocessing import ImagePreprocessing
from trainer.loop import losses
from trainer.loop.early_stopping import EarlyStopping
from trainer.metrics.monitor import Monitor
from trainer.runtime import devices

ON_NONFINITE = ("stop", "restore")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The plain settings a built run uses at run time (see `Trainer` for each one's meaning)."""

  seed: int
  batch_size: int
  eval_batch_size: int
  train_steps: int
  steps_per_loop: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  mixed_precision: str | None | dict  # per device kind: as bound, resolved by `trainer.runtime.devices`
  jit_compile: bool | str | dict
  on_nonfinite: str
  restore_lr_factor: float
  max_restores: int


@gin.configurable
class Trainer:
  """Trains `model` on `data` with `optimizer`, `regularizers` and an explicit GradientTape loop.

  Args (all gin-bindable):
    model: factory returning a `tf.keras.Model` (e.g. `@MLP`).
    data: factory returning `trainer.data.Splits` (e.g. `@digits`).
    preprocessing: `@ImagePreprocessing()` to crop, flip, resize and normalize images (seeded per
      example); None converts uint8 images to [0, 1] floats and leaves float features as they are.
    optimizer: Keras optimizer class (e.g. `@Adam`); called with `learning_rate=<schedule>`.
    learning_rate: a float or a schedule (`@Constant()`, `@WarmupCosine()`, `@Piecewise()`).
    loss: per-example loss `(labels, outputs) -> [batch]` (`@softmax_cross_entropy`).
    regularizers: loss terms (`@L2()`, `@L1()`) and update terms (`@DecoupledWeightDecay()`,
      `@ProximalL1()`, a batch transform `@Mixup()` or `@CutMix()`, `@SAM()`); layers' own
      `kernel_regularizer`s are added as `penalty/model_losses`. Label smoothing is a loss option
      (`softmax_cross_entropy.label_smoothing`).
    batch_size: global batch size (split evenly across replicas).
    eval_batch_size: global batch size for evaluation.
    train_steps: total optimizer steps (a resumed run continues up to this number).
    steps_per_loop: steps per `tf.function` call (the host loop); summaries land at loop ends.
    eval_every, checkpoint_every: in steps; both also happen at the last step.
    keep_checkpoints: how many checkpoints to keep.
    seed: seeds weights (via `tf.keras.utils.set_random_seed`) and the data order.
    mixed_precision: None (float32), 'mixed_bfloat16' (TPU, recent CPUs) or 'mixed_float16' (GPU; adds
      dynamic loss scaling), or a policy per kind of device, e.g. `{'tpu': 'mixed_bfloat16'}` (the
      ImageNet recipes: bfloat16 under TPUStrategy, float32 on CPUs and GPUs; a kind left out is
      float32). Losses, penalties and metrics are computed in float32 either way.
    jit_compile: compile the replica train step with XLA: True, False, 'auto' (TPU and GPU: on; CPU:
      off, where it measured no better) or a mapping per kind of device (a kind left out: 'auto').
      Both per-kind settings are resolved for the strategy by `trainer.runtime.devices`.
    early_stopping: `@EarlyStopping()` to stop when an eval metric stops improving; the best weights
      go to model_dir/best (checkpoint, SavedModel, best.json).
    on_nonfinite: what a non-finite loss, penalty or gradient does: 'stop' (an error naming the term
      and the step; the last good checkpoint stays untouched) or 'restore' (reload the last good
      checkpoint and scale the learning rate by `restore_lr_factor`, at most `max_restores` times).
    monitor: the loop-boundary metrics (`norms/*`, `sparsity/*`, `gap/*`, `sharpness/*`, HParams);
      None uses `Monitor()` with its gin bindings. See trainer/metrics/monitor.py and docs/METRICS.md.
  """

  # Parameters that say how long or how often, not what is trained: a resumed run may change them
  # (the config guard derives its list from these declarations).
  RESUME_SAFE = ("train_steps", "eval_every", "checkpoint_every", "steps_per_loop", "keep_checkpoints",
                 "eval_batch_size", "on_nonfinite", "restore_lr_factor", "max_restores")

  def __init__(self, *, model: Callable = gin.REQUIRED, data: Callable = gin.REQUIRED,
               preprocessing: ImagePreprocessing | None = None, optimizer: Callable = gin.REQUIRED,
               learning_rate=1e-3,
               loss: Callable = losses.softmax_cross_entropy, regularizers: Sequence = (),
               batch_size: int = 64, eval_batch_size: int = 256, train_steps: int = 1000,
               steps_per_loop: int = 100, eval_every: int = 500, checkpoint_every: int = 500,
               keep_checkpoints: int = 3, seed: int = 0, mixed_precision: str | None | dict = None,
               jit_compile: bool | str | dict = devices.AUTO, monitor: Monitor | None = None,
               early_stopping: EarlyStopping | None = None, on_nonfinite: str = "stop",
               restore_lr_factor: float = 0.5, max_restores: int = 3):
    owner = "Trainer"
    self.model = _require_factory("model", model)
    self.data = _require_factory("data", data)
    if preprocessing is not None and not isinstance(preprocessing, ImagePreprocessing):
      raise TypeError(f"Trainer.preprocessing must be @ImagePreprocessing() (with parentheses), got "
                      f"{preprocessing!r}")
    self.preprocessing = preprocessing
    self.optimizer = _require_factory("optimizer", optimizer)
    self.learning_rate = learning_rate
    self.loss = loss
    self.regularizers = tuple(regularizers)
    # The builder checks that the batch sizes divide by the replica count, which it knows.
    self.batch_size = checks.integer(owner, "batch_size", batch_size, minimum=1)
    self.eval_batch_size = checks.integer(owner, "eval_batch_size", eval_batch_size, minimum=1)
    self.train_steps = checks.integer(owner, "train_steps", train_steps, minimum=1)
    self.steps_per_loop = checks.integer(owner, "steps_per_loop", steps_per_loop, minimum=1)
    self.eval_every = checks.integer(owner, "eval_every", eval_every, minimum=1)
    self.checkpoint_every = checks.integer(owner, "checkpoint_every", checkpoint_every, minimum=1)
    self.keep_checkpoints = checks.integer(owner, "keep_checkpoints", keep_checkpoints, minimum=1)
    self.seed = checks.integer(owner, "seed", seed, minimum=0, maximum=2**32 - 1)  # NumPy's seed range
    self.mixed_precision = _per_kind(devices.MIXED_PRECISION, mixed_precision)
    self.jit_compile = _per_kind(devices.JIT_COMPILE, jit_compile)
    self.monitor = monitor
    self.early_stopping = early_stopping
    if on_nonfinite not in ON_NONFINITE:
      raise ValueError(f"Trainer.on_nonfinite={on_nonfinite!r} is not one of {ON_NONFINITE}")
    self.on_nonfinite = on_nonfinite
    if not 0 < restore_lr_factor <= 1:
      raise ValueError(f"Trainer.restore_lr_factor must be in (0, 1], got {restore_lr_factor}")
    self.restore_lr_factor = float(restore_lr_factor)
    self.max_restores = checks.integer(owner, "max_restores", max_restores, minimum=0)

  def config(self) -> RunConfig:
    """The validated plain settings, as one frozen record."""
    return RunConfig(**{field.name: getattr(self, field.name) for field in dataclasses.fields(RunConfig)})


def _per_kind(setting: devices.PerKind, value):
  """`Trainer.<setting>` checked by the per-kind resolver; its error names the binding."""
  try:
    return setting.check(value)
  except ValueError as error:
    raise ValueError(f"Trainer.{setting.name}={value!r}: {error}") from None


def _require_factory(name: str, value) -> Callable:
  if isinstance(value, (tf.keras.Model, tf.keras.optimizers.Optimizer)) or not callable(value):
    raise TypeError(f"Trainer.{name} must be a factory: bind it without parentheses, e.g. "
                    f"`Trainer.{name} = @{_bound_factory(name, value)}`, so that Occam seeds and builds it "
                    f"under the distribution strategy's scope (got an instance: {value!r})")
  return value


def _bound_factory(name: str, value) -> str:
  """The configurable bound to `Trainer.<name>` (`MLP` for `@MLP()`, not the `Sequential` it built)."""
  try:
    return gin.query_parameter(f"Trainer.{name}").configurable.name
  except (ValueError, AttributeError):  # bound in Python, not through gin
    return type(value).__name__
