"""The throughput benchmark's workload: an MLP on synthetic data, trained by Occam, a bare loop and `fit`.

The bare loop and Keras `fit` use the same model factory (`models.MLP`), the same tf.data pipeline
(`trainer.data.pipeline.train_dataset`), Adam at a constant 1e-3 and L2 1e-4 on the kernels (biases
excluded in all three: Occam's default selector, `kernel_regularizer` in Keras, the kernels only in
the bare loop). All three track loss and accuracy, as a real training loop must.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import gin
import numpy as np
import tensorflow as tf

import models
from trainer.benchmarks import occam
from trainer.benchmarks.timing import Variant, clock, fit_variant, repeated
from trainer.data import ArrayData, Splits, pipeline

L2_SCALE = 1e-4
DECAY_RATE = 1e-4
PROXIMAL_SCALE = 1e-6
MIXUP_ALPHA = 0.2
SAM_RHO, ASAM_RHO = 0.05, 0.5  # the papers' radii
LEARNING_RATE = 1e-3
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """An MLP `input_dim-hidden...-10` trained at `batch_size`, timed in loops of `steps_per_loop`."""

  name: str
  input_dim: int
  hidden: tuple[int, ...]
  batch_size: int
  steps_per_loop: int
  loops_per_measurement: int

  @property
  def layer_sizes(self) -> list[int]:
    return [self.input_dim, *self.hidden, NUM_CLASSES]

  @property
  def parameters(self) -> int:
    sizes = self.layer_sizes
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

  @property
  def steps_per_measurement(self) -> int:
    return self.steps_per_loop * self.loops_per_measurement

  def training_flops(self) -> float:
    """FLOPs of one training step: 3 x forward matmuls (forward, input gradient, weight gradient).

    Forward = sum over layers of 2 * batch * fan_in * fan_out. Element-wise work (activations,
    softmax, Adam, penalties) is not counted, and neither is the fact that the first layer needs no
    input gradient (so this slightly *overstates* the work done, by 1/3 of the first layer).
    """
    sizes = self.layer_sizes
    return 3 * sum(2 * self.batch_size * a * b for a, b in zip(sizes[:-1], sizes[1:]))

  def describe(self) -> str:
    return (f"MLP {'-'.join(map(str, self.layer_sizes))}, batch {self.batch_size}, "
            f"{self.parameters:,} parameters, {self.steps_per_loop} steps per loop")

  def with_width(self, width: int) -> ModelSpec:
    return dataclasses.replace(self, name=f"width {width}", hidden=(width,) * len(self.hidden))


def synthetic_splits(input_dim: int, num_examples: int) -> Splits:
  """Gaussian features and uniform labels: throughput does not depend on what is learned."""
  rng = np.random.default_rng(0)

  def split(n: int) -> ArrayData:
    return ArrayData(rng.normal(size=(n, input_dim)).astype(np.float32),
                     rng.integers(0, NUM_CLASSES, size=n).astype(np.int32))

  return Splits(name="benchmark", train=split(num_examples), validation=split(64), test=split(64),
                num_classes=NUM_CLASSES, description=f"benchmark: {num_examples} x {input_dim} synthetic")


@gin.configurable
def benchmark_data(input_dim: int = gin.REQUIRED, num_examples: int = gin.REQUIRED) -> Splits:
  """Gin factory for `Trainer.data`: `synthetic_splits` (the builder calls it after seeding)."""
  return synthetic_splits(input_dim, num_examples)


def train_dataset(spec: ModelSpec, num_examples: int) -> tf.data.Dataset:
  """Occam's own training pipeline over the benchmark data, for the bare loop and `fit`."""
  return pipeline.train_dataset(synthetic_splits(spec.input_dim, num_examples).train,
                                global_batch_size=spec.batch_size, seed=0, start_step=0)


def occam_bindings(spec: ModelSpec, num_examples: int, *, regularizers: str = "@L2()",
                   jit_compile: bool = False, monitor: bool = True) -> list[str]:
  """The gin bindings of one Occam variant (`monitor=False` binds `MonitorOff`)."""
  bindings = [
      "Trainer.data = @benchmark_data",
      f"benchmark_data.input_dim = {spec.input_dim}",
      f"benchmark_data.num_examples = {num_examples}",
      "Trainer.model = @MLP",
      f"MLP.hidden_sizes = {tuple(spec.hidden)}",
      f"MLP.num_outputs = {NUM_CLASSES}",
      "Trainer.optimizer = @Adam",
      f"Trainer.learning_rate = {LEARNING_RATE}",
      f"Trainer.batch_size = {spec.batch_size}",
      f"Trainer.steps_per_loop = {spec.steps_per_loop}",
      f"Trainer.regularizers = [{regularizers}]",
      f"L2.scale = {L2_SCALE}",
      f"L1.scale = {L2_SCALE}",
      f"DecoupledWeightDecay.rate = {DECAY_RATE}",
      f"ProximalL1.scale = {PROXIMAL_SCALE}",
      f"Mixup.alpha = {MIXUP_ALPHA}",
      f"SAM.rho = {SAM_RHO}",
      f"asam/SAM.rho = {ASAM_RHO}",
      "asam/SAM.adaptive = True",
  ]
  return (bindings + (["Trainer.jit_compile = True"] if jit_compile else [])
          + ([] if monitor else ["Trainer.monitor = @MonitorOff()"]))


def occam_variant(label: str, spec: ModelSpec, bindings: Sequence[str], *, model_dir: str,
                  strategy: tf.distribute.Strategy | None = None) -> Variant:
  """Occam on `spec`, timed per host loop through `TrainRunner.train` (what the Controller calls)."""
  return occam.occam_variant(label, bindings, steps_per_loop=spec.steps_per_loop,
                             loops=spec.loops_per_measurement, model_dir=model_dir, strategy=strategy)


def bare_variant(label: str, spec: ModelSpec, num_examples: int, *, jit_compile: bool) -> Variant:
  """The hand-written baseline: GradientTape step, L2 on the kernels, Adam, loss/accuracy sums.

  With `jit_compile` the step is compiled by XLA inside the (uncompiled) host loop, which is also
  how Keras compiles `fit`'s step.
  """
  tf.keras.utils.set_random_seed(0)
  model = models.MLP(hidden_sizes=spec.hidden, num_outputs=NUM_CLASSES)
  model(tf.zeros((1, spec.input_dim)))
  optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
  optimizer.build(model.trainable_variables)
  kernels = [layer.kernel for layer in model.layers if isinstance(layer, tf.keras.layers.Dense)]
  loss_sum, correct_sum = tf.Variable(0.0), tf.Variable(0.0)

  def step(features, labels):
    with tf.GradientTape() as tape:
      logits = model(features, training=True)
      per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
      penalty = L2_SCALE * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
      loss = tf.reduce_mean(per_example) + penalty
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    loss_sum.assign_add(loss)
    correct_sum.assign_add(tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)))

  step_fn = tf.function(step, jit_compile=True) if jit_compile else step

  @tf.function
  def loop(iterator, num_steps):
    for _ in tf.range(num_steps):
      step_fn(*next(iterator))

  iterator = iter(train_dataset(spec, num_examples))
  num_steps = tf.constant(spec.steps_per_loop, tf.int32)

  def run_loop() -> None:
    loop(iterator, num_steps)
    float(loss_sum.read_value())

  return Variant(label, repeated(run_loop, spec.loops_per_measurement), spec.steps_per_measurement)


def keras_fit_variant(label: str, spec: ModelSpec, num_examples: int, *, steps_per_execution: int,
                      jit_compile: bool) -> Variant:
  """Keras `fit` on the same model, data, optimizer and L2 (as `kernel_regularizer`)."""
  tf.keras.utils.set_random_seed(0)
  model = models.MLP(hidden_sizes=spec.hidden, num_outputs=NUM_CLASSES,
                     kernel_regularizer=tf.keras.regularizers.L2(L2_SCALE))
  model.compile(optimizer=tf.keras.optimizers.Adam(LEARNING_RATE),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], steps_per_execution=steps_per_execution, jit_compile=jit_compile)
  return fit_variant(label, model, train_dataset(spec, num_examples), steps=spec.steps_per_measurement,
                     steps_per_execution=steps_per_execution)


def fit_auto_jit(spec: ModelSpec) -> bool:
  """What Keras makes of `jit_compile='auto'` (fit's default) for this model on this machine."""
  model = models.MLP(hidden_sizes=spec.hidden, num_outputs=NUM_CLASSES)
  model.compile(optimizer="adam", loss="mse", jit_compile="auto")
  return bool(model.jit_compile)


def matmul_variant(size: int, chain: int = 4) -> Variant:
  """The machine's float32 matmul throughput: a chain of square matmuls in one `tf.function`."""
  matrix = tf.random.normal([size, size]) / math.sqrt(size)

  @tf.function
  def multiply(x):
    for _ in range(chain):
      x = tf.matmul(x, matrix)
    return x

  def measure() -> np.ndarray:
    started = clock()
    multiply(matrix).numpy()
    return clock() - started

  return Variant(f"{chain} chained {size}x{size} matmuls", measure, chain * 2.0 * size**3)
