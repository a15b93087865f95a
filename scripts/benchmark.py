r"""Occam's performance benchmark: throughput against a bare loop and Keras `fit`, and what extras cost.

    python scripts/benchmark.py            # the full run (a few minutes on 2 cores)
    python scripts/benchmark.py --quick    # tiny models, one repeat: a smoke run, numbers meaningless
    python scripts/benchmark.py --sections=frameworks,costs   # only some sections
    python scripts/benchmark.py --sections=sam                # what SAM's second pass costs

Everything runs in one process (the startup section times child processes: Occam's command line
and the same run as a Keras `fit` script). Variants that are compared with each other are built
together and then timed interleaved (A B C A B C ...) and repeated; each figure is the median over
repeats, so load that comes and goes on a shared machine hits every variant alike and the *ratios*
are what to read. Absolute steps/sec are printed for the record.

Occam is measured through its public seams, as `trainer.train` runs: `register_all()`, gin bindings
parsed by `trainer.config.parsing.parse`, `Trainer()` under the strategy's scope, `builder.build`,
and per host loop `runners.train_runner(run).train(steps_per_loop)`, exactly what the Controller
calls (reset the metric accumulators, one compiled `train_program.loop` call, read the metrics, the
learning rate and the `Monitor`'s per-loop statistics). Not timed: evaluation, checkpoints and
summary writing, which happen at their own intervals. The bare loop and Keras `fit` use the same
model factory (`models.MLP`), the same tf.data pipeline (`trainer.data.pipeline.train_dataset`),
Adam at a constant 1e-3 and L2 1e-4 on the kernels (biases excluded in all three: Occam's default
selector, `kernel_regularizer` in Keras, the kernels only in the bare loop). All three track loss and
accuracy, as a real training loop must.

The Monitor's cost is the default run against one bound with `Trainer.monitor = @MonitorOff()`, a
`Monitor` whose `after_loop` computes nothing: the same baseline as before the restructuring (the
host loop without the Monitor's call), reached through the config. No `Monitor` setting turns the
per-loop statistics off (the probe batch has at least one example), so "the cheapest Monitor" by gin
settings would still run a forward and backward pass per loop and understate the cost. The cost of
the built-in metric accumulators is not measured: no public setting builds a `TrainProgram` without
them, and the benchmark does not patch Occam's internals.

SAM's cost (the `sam` section) is its step time over the plain step's, both with L2 and built and timed
side by side like every other comparison: SAM makes two forward and backward passes per step, and one
optimizer step.

The CPU is split into 2 logical devices before TensorFlow starts, for the replica-scaling section;
everything else runs on the default strategy (device 0; the thread pools are shared, so the split
does not slow it down).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.config import parsing, registry  # noqa: E402
from trainer.loop import builder, runners  # noqa: E402
from trainer.loop.settings import Trainer  # noqa: E402
from trainer.metrics.monitor import Monitor  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_LOGICAL_CPUS = 2
L2_SCALE = 1e-4
DECAY_RATE = 1e-4
PROXIMAL_SCALE = 1e-6
MIXUP_ALPHA = 0.2
SAM_RHO, ASAM_RHO = 0.05, 0.5  # the papers' radii
LEARNING_RATE = 1e-3
NUM_CLASSES = 10
# In print order. `--quick` leaves out startup: a second process importing TensorFlow would be most
# of the smoke run's time.
SECTIONS = ("startup", "frameworks", "flops", "costs", "scaling", "sam", "replicas")
QUICK_SECTIONS = SECTIONS[1:]
# The costs section's terms, each against no regularizer (the L2 row is the default `occam` run).
REGULARIZER_SETS = {
    "L1": "@L1()",
    "DecoupledWeightDecay": "@DecoupledWeightDecay()",
    "ProximalL1": "@ProximalL1()",
    "L2 + DecoupledWeightDecay + ProximalL1": "@L2(), @DecoupledWeightDecay(), @ProximalL1()",
    "Mixup": "@L2(), @Mixup()",
}
ALL_TERMS = "L2 + DecoupledWeightDecay + ProximalL1"
# The sam section's variants, each timed against the `occam` run (L2 alone): SAM adds a second forward
# and backward pass per step (and the ascent), not a second optimizer step or metric update.
SAM_SETS = {"SAM": "@L2(), @SAM()", "ASAM": "@L2(), @asam/SAM()"}


# ----------------------------------------------------------------------------------------------
# Settings


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


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to run: the full benchmark or the `--quick` smoke run.

  Attributes:
    compute: the compute-bound model; it alone also has the flops and scaling sections.
    dispatch: the dispatch-bound model, or None to leave it out.
    jit: which of Occam's and the other loops' XLA settings to time (False, True or both).
    term_sets: the keys of `REGULARIZER_SETS` the costs section times; ALL_TERMS among them (the
      targets and the scaling section read it).
    sam_sets: the keys of `SAM_SETS` the sam section times.
    widths: hidden widths of the scaling section, besides the compute-bound model's own.
    repeats: timed rounds after the warm-up.
    num_examples: synthetic training examples.
    matmul_size: side of the square matmuls that measure the FLOP/s peak.
    quick: the smoke run (its numbers are meaningless).
  """

  compute: ModelSpec
  dispatch: ModelSpec | None
  jit: tuple[bool, ...]
  term_sets: tuple[str, ...]
  sam_sets: tuple[str, ...]
  widths: tuple[int, ...]
  repeats: int
  num_examples: int
  matmul_size: int
  quick: bool

  @property
  def models(self) -> tuple[ModelSpec, ...]:
    return (self.compute,) if self.dispatch is None else (self.compute, self.dispatch)


FULL = Settings(
    # ~25 ms per step here, so 20 steps per loop already make the per-call overhead negligible; the
    # dispatch-bound model uses 100, the number the targets were stated for.
    compute=ModelSpec("compute", 784, (1024, 1024), 256, steps_per_loop=20, loops_per_measurement=1),
    dispatch=ModelSpec("dispatch", 64, (128,), 32, steps_per_loop=100, loops_per_measurement=3),
    jit=(False, True), term_sets=tuple(REGULARIZER_SETS), sam_sets=tuple(SAM_SETS),
    widths=(128, 512, 2048), repeats=3,
    num_examples=4096, matmul_size=2048, quick=False)
# Every timed variant costs about a second of tracing (XLA: two or three more) however small the
# model, so the smoke run builds each code path once: one model, no XLA, one term set, one extra width.
QUICK = Settings(
    compute=ModelSpec("compute", 784, (64, 64), 32, steps_per_loop=2, loops_per_measurement=1),
    dispatch=None, jit=(False,), term_sets=(ALL_TERMS,), sam_sets=("SAM",), widths=(32,), repeats=1,
    num_examples=256,
    matmul_size=256, quick=True)


# ----------------------------------------------------------------------------------------------
# Timing


def clock() -> np.ndarray:
  """[wall seconds, this process's CPU seconds]; every measurement reads both.

  Wall time is what a user waits for, but on a shared machine it also counts the time other
  processes held the cores. CPU time counts only our own work (all threads), so it is nearly immune
  to other load, but blind to time our cores sat idle (e.g. waiting on a host round trip).
  """
  return np.array([time.perf_counter(), time.process_time()])


@dataclasses.dataclass
class Variant:
  """One thing to time: `measure()` does `work` units (steps, or FLOPs) and returns `clock()` deltas."""

  label: str
  measure: Callable[[], np.ndarray]
  work: float
  seconds: list[np.ndarray] = dataclasses.field(default_factory=list)

  @property
  def rate(self) -> np.ndarray:
    """[work per wall second, work per CPU second], from the median times over repeats."""
    return self.work / np.median(np.array(self.seconds), axis=0)


def time_interleaved(variants: Sequence[Variant], repeats: int) -> None:
  """One untimed warm-up each (tracing, XLA compilation, prefetch), then `repeats` rounds A B C A B C."""
  for variant in variants:
    variant.measure()
  for _ in range(repeats):
    for variant in variants:
      variant.seconds.append(variant.measure())


def _timed_loops(run_loop: Callable[[], None], loops: int) -> Callable[[], np.ndarray]:
  def measure() -> np.ndarray:
    started = clock()
    for _ in range(loops):
      run_loop()
    return clock() - started
  return measure


# ----------------------------------------------------------------------------------------------
# Data and the three training loops


def synthetic_splits(input_dim: int, num_examples: int):
  """Gaussian features and uniform labels: throughput does not depend on what is learned."""
  from trainer.data import ArrayData, Splits
  rng = np.random.default_rng(0)

  def split(n: int) -> ArrayData:
    return ArrayData(rng.normal(size=(n, input_dim)).astype(np.float32),
                     rng.integers(0, NUM_CLASSES, size=n).astype(np.int32))

  return Splits(name="benchmark", train=split(num_examples), validation=split(64), test=split(64),
                num_classes=NUM_CLASSES, description=f"benchmark: {num_examples} x {input_dim} synthetic")


@gin.configurable
def benchmark_data(input_dim: int = gin.REQUIRED, num_examples: int = gin.REQUIRED):
  """Gin factory for `Trainer.data`: `synthetic_splits` (the builder calls it after seeding)."""
  return synthetic_splits(input_dim, num_examples)


@gin.configurable
class MonitorOff(Monitor):
  """A `Monitor` that computes no per-loop statistics: the baseline of the Monitor's cost row."""

  def after_loop(self, previous_step: int, step: int) -> dict[str, float]:
    del previous_step, step
    return {}


def train_dataset(spec: ModelSpec, settings: Settings) -> tf.data.Dataset:
  """Occam's own training pipeline over the benchmark data, for the bare loop and `fit`."""
  from trainer.data import pipeline
  return pipeline.train_dataset(synthetic_splits(spec.input_dim, settings.num_examples).train,
                                global_batch_size=spec.batch_size, seed=0, start_step=0)


def occam_bindings(spec: ModelSpec, settings: Settings, *, regularizers: str = "@L2()",
                   jit_compile: bool = False, monitor: bool = True) -> list[str]:
  """The gin bindings of one Occam variant (`monitor=False` binds `MonitorOff`)."""
  bindings = [
      "Trainer.data = @benchmark_data",
      f"benchmark_data.input_dim = {spec.input_dim}",
      f"benchmark_data.num_examples = {settings.num_examples}",
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


def build_run(bindings: Sequence[str], strategy: tf.distribute.Strategy, model_dir: str) -> builder.Run:
  """The `Run` that `bindings` alone describe, built under `strategy` as `trainer.train` builds it."""
  registry.register_all()
  parsing.parse([], bindings)
  with strategy.scope():
    settings = Trainer()
  return builder.build(settings, strategy=strategy, model_dir=model_dir, is_chief=True)


def occam_variant(label: str, spec: ModelSpec, bindings: Sequence[str], *, model_dir: str,
                  strategy: tf.distribute.Strategy | None = None) -> Variant:
  """A freshly built run, timed per host loop through `TrainRunner.train` (what the Controller calls)."""
  runner = runners.train_runner(build_run(bindings, strategy or tf.distribute.get_strategy(),
                                          tempfile.mkdtemp(dir=model_dir)))

  def run_loop() -> None:
    output = runner.train(spec.steps_per_loop)
    if output.nonfinite:  # A non-finite loop returns before the Monitor: not what training times.
      raise FloatingPointError(f"{label}: non-finite {', '.join(output.nonfinite)} at step "
                               f"{output.first_bad_step}")

  return Variant(label, _timed_loops(run_loop, spec.loops_per_measurement), spec.steps_per_measurement)


def _dense_kernels(model: tf.keras.Model) -> list:
  return [layer.kernel for layer in model.layers if isinstance(layer, tf.keras.layers.Dense)]


def bare_variant(label: str, spec: ModelSpec, settings: Settings, *, jit_compile: bool) -> Variant:
  """The hand-written baseline: GradientTape step, L2 on the kernels, Adam, loss/accuracy sums.

  With `jit_compile` the step is compiled by XLA inside the (uncompiled) host loop, which is also
  how Keras compiles `fit`'s step.
  """
  import models
  tf.keras.utils.set_random_seed(0)
  model = models.MLP(hidden_sizes=spec.hidden, num_outputs=NUM_CLASSES)
  model(tf.zeros((1, spec.input_dim)))
  optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
  optimizer.build(model.trainable_variables)
  kernels = _dense_kernels(model)
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

  iterator = iter(train_dataset(spec, settings))
  num_steps = tf.constant(spec.steps_per_loop, tf.int32)

  def run_loop() -> None:
    loop(iterator, num_steps)
    float(loss_sum.read_value())

  return Variant(label, _timed_loops(run_loop, spec.loops_per_measurement), spec.steps_per_measurement)


class _BatchEndTimes(tf.keras.callbacks.Callback):
  """`clock()` at the end of every `fit` execution (one per `steps_per_execution` steps)."""

  def __init__(self):
    super().__init__()
    self.times: list[np.ndarray] = []

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(clock())


def fit_variant(label: str, spec: ModelSpec, settings: Settings, *, steps_per_execution: int,
                jit_compile) -> Variant:
  """Keras `fit` on the same model, data, optimizer and L2 (as `kernel_regularizer`).

  Each measurement is one `fit` call of one extra execution plus the timed steps; the time runs from
  the end of the first execution to the end of the last, so neither `fit`'s per-call setup nor the
  new iterator's first batch is counted: steady-state throughput, like the other loops.
  """
  import models
  tf.keras.utils.set_random_seed(0)
  model = models.MLP(hidden_sizes=spec.hidden, num_outputs=NUM_CLASSES,
                     kernel_regularizer=tf.keras.regularizers.L2(L2_SCALE))
  model.compile(optimizer=tf.keras.optimizers.Adam(LEARNING_RATE),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], steps_per_execution=steps_per_execution, jit_compile=jit_compile)
  dataset = train_dataset(spec, settings)
  steps = spec.steps_per_measurement
  if steps % steps_per_execution:
    raise ValueError(f"{steps} steps are not a multiple of steps_per_execution={steps_per_execution}")

  def measure() -> np.ndarray:
    timer = _BatchEndTimes()
    model.fit(dataset, epochs=1, steps_per_epoch=steps + steps_per_execution, verbose=0,
              callbacks=[timer])
    return timer.times[-1] - timer.times[0]

  return Variant(label, measure, steps)


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


# ----------------------------------------------------------------------------------------------
# Report


def show_ratio(value: float) -> str:
  return f"{value:.2f}x"


def show_cost(value: float) -> str:
  return f"{value:+.1%}"


def show_percent(value: float) -> str:
  return f"{value:.0%}"


@dataclasses.dataclass
class Report:
  """Rows of the table (`section | what | wall | cpu | detail`) and the target verdicts.

  A figure is a [wall, cpu] pair (`Variant.rate` ratios) or a single string (startup and memory,
  which only have a wall-clock figure).
  """

  rows: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
  targets: list[str] = dataclasses.field(default_factory=list)

  def add(self, section: str, what: str, value: np.ndarray | str, detail: str = "", *,
          show: Callable[[float], str] = show_ratio) -> None:
    cells = (value, "") if isinstance(value, str) else (show(value[0]), show(value[1]))
    self.rows.append((section, what, *cells, detail))
    print(f"  [{section}] {what}: wall {cells[0]}, cpu {cells[1]} {detail}", flush=True)

  def target(self, name: str, value: np.ndarray, threshold: float, *, at_most: bool = False,
             show: Callable[[float], str] = show_ratio) -> None:
    """`PASS`/`FAIL` by wall time (what the target is about), with the CPU-time verdict beside it."""
    verdicts = ["PASS" if (v <= threshold if at_most else v >= threshold) else "FAIL" for v in value]
    self.targets.append(f"{verdicts[0]} (cpu: {verdicts[1]}) {name}: wall {show(value[0])}, "
                        f"cpu {show(value[1])} (target {'<=' if at_most else '>='} {show(threshold)})")

  def print(self, header: Sequence[str]) -> None:
    columns = ("section", "what", "wall", "cpu")
    widths = [max(len(row[i]) for row in [columns, *self.rows]) for i in range(len(columns))]
    print("\n" + "\n".join(header) + "\n")
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " | detail")
    section = None
    for row in self.rows:
      if row[0] != section:
        section = row[0]
        print()
      print(" | ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + " | " + row[4])
    print("\nTargets (verdict by wall time; cpu: the same target judged by CPU time):")
    print("\n".join(self.targets))


def ratio(numerator: Variant, denominator: Variant) -> np.ndarray:
  """[wall, cpu] ratio of throughputs: > 1 means `numerator` is faster."""
  return numerator.rate / denominator.rate


def cost(extra: Variant, base: Variant) -> np.ndarray:
  """[wall, cpu] extra time per step of `extra` relative to `base` (time with / time without - 1)."""
  return base.rate / extra.rate - 1


def rates(*variants: Variant) -> str:
  return " vs ".join(f"{v.rate[0]:,.1f}" for v in variants) + " steps/s (wall)"


# ----------------------------------------------------------------------------------------------
# Sections

def with_jit(name: str, jit: bool) -> str:
  """The key of a variant's XLA-compiled twin: 'bare' -> 'bare jit'."""
  return f"{name} jit" if jit else name


def variants_needed(spec: ModelSpec, settings: Settings, sections: Sequence[str]) -> list[str]:
  """The keys of the variants of `spec` that `sections` read, each once, in build order.

  `occam` (with L2, as the other loops have) doubles as the "L2" term and the 1-replica baseline.
  The compute-bound model alone has the flops and scaling sections.
  """
  compute, jits = spec is settings.compute, settings.jit
  loops = [with_jit(loop, jit) for jit in jits for loop in ("occam", "bare", "fit loop", "fit step")]
  needed = {
      "frameworks": loops,
      "flops": [key for key in loops if not key.startswith("fit")] + ["peak"] if compute else [],
      "costs": ["occam", "no regularizer", *settings.term_sets, "monitor off",
                *(["no regularizer jit", "all terms jit"] if True in jits else [])],
      "scaling": ["no regularizer", ALL_TERMS] if compute else [],
      "replicas": ["occam", "2 replicas"],
      "sam": ["occam", *settings.sam_sets],
  }
  return list(dict.fromkeys(key for section in sections for key in needed.get(section, [])))


@dataclasses.dataclass
class ModelGroup:
  """The variants of one model that the chosen sections read (keys: `variants_needed`).

  They are timed together, so that all the model's ratios share the same noise.
  """

  spec: ModelSpec
  variants: dict[str, Variant]

  def __getitem__(self, key: str) -> Variant:
    return self.variants[key]


def build_group(spec: ModelSpec, settings: Settings, sections: Sequence[str],
                mirrored: tf.distribute.Strategy | None, model_dir: str) -> ModelGroup:
  """Builds (but does not time) the variants of `spec` that `sections` need."""
  k = spec.steps_per_loop

  def occam(label: str, regularizers: str = "@L2()", jit_compile: bool = False, monitor: bool = True,
            **kwargs) -> Callable[[], Variant]:
    bindings = occam_bindings(spec, settings, regularizers=regularizers, jit_compile=jit_compile,
                              monitor=monitor)
    return lambda: occam_variant(label, spec, bindings, model_dir=model_dir, **kwargs)

  factories = {
      "occam": occam("occam"),
      "occam jit": occam("occam jit", jit_compile=True),
      "no regularizer": occam("no regularizer", regularizers=""),
      "no regularizer jit": occam("no regularizer jit", regularizers="", jit_compile=True),
      **{name: occam(name, regularizers=value) for name, value in REGULARIZER_SETS.items()},
      "all terms jit": occam("all terms jit", regularizers=REGULARIZER_SETS[ALL_TERMS], jit_compile=True),
      "monitor off": occam("monitor off", regularizers="", monitor=False),
      "2 replicas": occam("2 replicas", strategy=mirrored),
      **{name: occam(name, regularizers=value) for name, value in SAM_SETS.items()},
      "peak": lambda: matmul_variant(settings.matmul_size),
  }
  for jit in (False, True):
    factories[with_jit("bare", jit)] = lambda jit=jit: bare_variant(f"bare jit={jit}", spec, settings,
                                                                    jit_compile=jit)
    factories[with_jit("fit loop", jit)] = lambda jit=jit: fit_variant(
        f"fit spe={k} jit={jit}", spec, settings, steps_per_execution=k, jit_compile=jit)
    factories[with_jit("fit step", jit)] = lambda jit=jit: fit_variant(
        f"fit spe=1 jit={jit}", spec, settings, steps_per_execution=1, jit_compile=jit)
  return ModelGroup(spec, {key: factories[key]() for key in variants_needed(spec, settings, sections)})


def fit_auto_jit(spec: ModelSpec) -> bool:
  """What Keras makes of `jit_compile='auto'` (fit's default) for this model on this machine."""
  import models
  model = models.MLP(hidden_sizes=spec.hidden, num_outputs=NUM_CLASSES)
  model.compile(optimizer="adam", loss="mse", jit_compile="auto")
  return bool(model.jit_compile)


def report_frameworks(group: ModelGroup, settings: Settings, report: Report) -> None:
  """Occam vs the bare loop and vs `fit` at steps_per_execution = steps_per_loop and at 1, jit off/on."""
  name, k = group.spec.name, group.spec.steps_per_loop
  default_jit = fit_auto_jit(group.spec)
  for jit in settings.jit:
    tag = "jit" if jit else "no jit"
    mine, bare = group[with_jit("occam", jit)], group[with_jit("bare", jit)]
    fit_loop, fit_step = group[with_jit("fit loop", jit)], group[with_jit("fit step", jit)]
    for what, other in ((f"bare loop ({tag})", bare), (f"fit spe={k} ({tag})", fit_loop),
                        (f"fit spe=1 ({tag}){' = fit default' if jit == default_jit else ''}", fit_step)):
      report.add(name, f"occam / {what}", ratio(mine, other), rates(mine, other))
    report.target(f"{name}: occam >= 0.9x bare loop ({tag})", ratio(mine, bare), 0.9)
    report.target(f"{name}: occam >= 1.2x fit spe={k} ({tag})", ratio(mine, fit_loop), 1.2)
  for jit in settings.jit:
    tag = "jit" if jit else "no jit"
    bare = group[with_jit("bare", jit)]
    report.add(name, f"bare loop / fit spe={k} ({tag})", ratio(bare, group[with_jit("fit loop", jit)]))
    report.add(name, f"bare loop / fit spe=1 ({tag})", ratio(bare, group[with_jit("fit step", jit)]))
  if len(settings.jit) == 2:
    report.add(name, "bare loop: jit / no jit", ratio(group["bare jit"], group["bare"]))
    report.add(name, "occam: jit / no jit", ratio(group["occam jit"], group["occam"]))


def report_flops(group: ModelGroup, settings: Settings, report: Report) -> None:
  """Achieved FLOP/s of the compute-bound step against the matmul peak timed alongside it.

  The cpu column is FLOPs per CPU-second (both threads): efficiency with other load factored out.
  """
  flops, peak = group.spec.training_flops(), group["peak"].rate
  gflops = lambda v: f"{v / 1e9:.1f} GFLOP/s"  # noqa: E731
  best_occam = max((group[with_jit("occam", jit)] for jit in settings.jit), key=lambda v: v.rate[0])
  best_bare = max((group[with_jit("bare", jit)] for jit in settings.jit), key=lambda v: v.rate[0])
  report.add("flops", "tf.matmul peak (float32)", peak, f"{group['peak'].label} in one tf.function",
             show=gflops)
  for variant in (best_occam, best_bare):
    report.add("flops", f"{variant.label} step", variant.rate * flops,
               f"{flops / 1e9:.2f} GFLOP/step = 3 x sum 2*B*fan_in*fan_out", show=gflops)
    report.add("flops", f"{variant.label} step / peak", variant.rate * flops / peak, show=show_percent)
  report.target("compute: occam step >= 70% of matmul peak", best_occam.rate * flops / peak, 0.7,
                show=show_percent)


def report_costs(group: ModelGroup, settings: Settings, report: Report) -> None:
  """Each regularization term and the Monitor's metric set: cost = time with / time without - 1."""
  section, plain = f"{group.spec.name} costs", group["no regularizer"]
  for term, variant in [("L2", group["occam"]), *[(name, group[name]) for name in settings.term_sets]]:
    report.add(section, f"regularizer {term}", cost(variant, plain), rates(variant, plain), show=show_cost)
  targets = {"compute: all regularization terms cost <= 5%": cost(group[ALL_TERMS], plain)}
  if True in settings.jit:
    all_jit, plain_jit = group["all terms jit"], group["no regularizer jit"]
    targets["compute: all regularization terms cost <= 5% (jit)"] = cost(all_jit, plain_jit)
    report.add(section, f"regularizer {ALL_TERMS} (jit)", cost(all_jit, plain_jit), rates(all_jit, plain_jit),
               show=show_cost)
  monitor_off = group["monitor off"]
  targets["compute: default metric set (Monitor) costs <= 5%"] = cost(plain, monitor_off)
  report.add(section, "default Monitor metric set (per-loop statistics)", cost(plain, monitor_off),
             rates(plain, monitor_off), show=show_cost)
  if group.spec is settings.compute:
    for name, value in targets.items():
      report.target(name, value, 0.05, at_most=True, show=show_cost)


def report_replicas(group: ModelGroup, report: Report) -> None:
  """2 replicas (Mirrored over 2 logical CPUs) vs 1 (default strategy) at the same global batch.

  Both use the same 2 physical cores, so the ideal ratio is about 1: what is lost is the strategy
  machinery (per-replica dispatch, all-reduce, distributed iterator).
  """
  two, one = group["2 replicas"], group["occam"]
  report.add("replicas", f"{group.spec.name}: 2 replicas (Mirrored) / 1 replica (default)", ratio(two, one),
             rates(two, one))


def report_sam(group: ModelGroup, settings: Settings, report: Report) -> None:
  """SAM's step time over the plain step's (both with L2), measured side by side in one run.

  SAM adds a second forward and backward pass at w + e, the ascent step, and restoring w: about 2x where
  forward and backward dominate the step, less where the optimizer and the bookkeeping weigh too.
  """
  plain = group["occam"]
  for name in settings.sam_sets:
    sam = group[name]
    report.add(f"{group.spec.name} sam", f"{name} step time / plain step time", ratio(plain, sam),
               rates(sam, plain) + "; 2 forward-backward passes per step instead of 1")


def section_scaling(compute: ModelGroup, settings: Settings, report: Report, model_dir: str) -> None:
  """How the cost of all terms together grows with parameter count, at the compute-bound shape."""
  pairs = {settings.compute.hidden[0]: (compute["no regularizer"], compute[ALL_TERMS], settings.compute)}
  for width in settings.widths:
    spec = settings.compute.with_width(width)
    plain = occam_variant("none", spec, occam_bindings(spec, settings, regularizers=""), model_dir=model_dir)
    all_terms = occam_bindings(spec, settings, regularizers=REGULARIZER_SETS[ALL_TERMS])
    terms = occam_variant("all", spec, all_terms, model_dir=model_dir)
    time_interleaved([plain, terms], settings.repeats)
    pairs[width] = (plain, terms, spec)
  for width in sorted(pairs):
    plain, terms, spec = pairs[width]
    report.add("scaling", f"all terms at width {width} ({spec.parameters:,} parameters)", cost(terms, plain),
               rates(terms, plain), show=show_cost)


# The quickstart as a Keras `fit` script: the same data (the digits train split), model factory,
# L2 on the kernels, Adam on warmup + cosine and batch size. It prints a marker after its imports,
# after `compile` and when the first step has finished (read back through the step counter).
FIT_STARTUP_SCRIPT = """\
import tensorflow as tf
import models
from trainer.data.digits import digits
print("startup | imported", flush=True)
train = digits().train
dataset = (tf.data.Dataset.from_tensor_slices((train.features, train.labels))
           .shuffle(len(train.labels), seed=0).repeat().batch(64, drop_remainder=True))
tf.keras.utils.set_random_seed(0)
model = models.MLP(hidden_sizes=(128, 128), kernel_regularizer=tf.keras.regularizers.L2(1e-4))
schedule = tf.keras.optimizers.schedules.CosineDecay(0.0, 2000, warmup_target=3e-3, warmup_steps=100)
model.compile(optimizer=tf.keras.optimizers.Adam(schedule), metrics=["accuracy"],
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
print("startup | built", flush=True)

class FirstStep(tf.keras.callbacks.Callback):
  def on_train_batch_end(self, batch, logs=None):
    if batch == 0 and int(self.model.optimizer.iterations) == 1:
      print("startup | first step", flush=True)

model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[FirstStep()])
"""
# What marks the end of each start-up phase in a child's output: imports (and for Occam: gin parsed,
# the strategy created), building the model/run, and the first training step done.
STARTUP_PHASES = ("imports", "build", "first step")
OCCAM_MARKERS = (r"\] strategy: ", r"\] starting from ", r"\] train \| step: 1/")
FIT_MARKERS = ("startup | imported", "startup | built", "startup | first step")


def _cpu_seconds(pid: int) -> float:
  """CPU seconds (user + system, all threads) the running process `pid` has used so far; NaN where
  /proc is missing (not Linux)."""
  try:
    with open(f"/proc/{pid}/stat") as file:
      fields = file.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
  except OSError:
    return math.nan
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def time_child(command: Sequence[str], markers: Sequence[str]) -> tuple[np.ndarray, float]:
  """Runs `command` from the repo root: ([wall, cpu] seconds from process start to the first output line
  matching each of `markers`, in order, shape [markers, 2]; wall seconds to exit). Lines are timed when
  they arrive (stderr is unbuffered); the CPU time is the child's own, read from /proc at that moment,
  so it is nearly immune to other processes' load."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  started = time.perf_counter()
  seen: list[tuple[float, float]] = []
  output = []
  with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as child:
    for line in child.stdout:
      output.append(line)
      if len(seen) < len(markers) and re.search(markers[len(seen)], line):
        seen.append((time.perf_counter() - started, _cpu_seconds(child.pid)))
  total = time.perf_counter() - started
  if child.returncode or len(seen) < len(markers):
    raise RuntimeError(f"{command[:3]} failed ({child.returncode}) or lacked {markers[len(seen):]}:\n"
                       + "".join(output[-20:]))
  return np.array(seen), total


def show_seconds(value: float) -> str:
  return f"{value:.2f} s"


def show_signed_seconds(value: float) -> str:
  return f"{value:+.2f} s"


def section_startup(report: Report, model_dir: str, repeats: int) -> None:
  """From process start to the first training step: `python -m trainer.main` on the quickstart against
  the same run as a Keras `fit` script, interleaved after one warm-up each, `repeats` times each
  (medians); where the time goes (imports, building, first step) and peak RSS.

  Occam's first step is the first `train | step: 1/` log line (steps_per_loop=1), so it includes what
  Occam does at the first loop's end (the Monitor's statistics, the summaries); `fit`'s is its first
  `on_train_batch_end` after the step counter reads 1. Each figure is [wall, the child's CPU time].
  """
  def occam_command() -> list[str]:  # a fresh model_dir each time
    return [sys.executable, "-m", "trainer.main", "--gin_file=gin_configs/quickstart.gin",
            f"--model_dir={tempfile.mkdtemp(dir=model_dir)}", "--gin_bindings=Trainer.train_steps=2",
            "--gin_bindings=Trainer.steps_per_loop=1"]

  fit_command = [sys.executable, "-c", FIT_STARTUP_SCRIPT]
  # One untimed warm-up each (the first process reads TensorFlow's libraries from disk); the largest
  # RSS of any child so far is then the Occam run's.
  time_child(occam_command(), OCCAM_MARKERS)
  peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  time_child(fit_command, FIT_MARKERS)
  occam, fit, whole = [], [], []
  for _ in range(repeats):
    seen, total = time_child(occam_command(), OCCAM_MARKERS)
    occam.append(seen)
    whole.append(total)
    fit.append(time_child(fit_command, FIT_MARKERS)[0])
  occam, fit = np.array(occam), np.array(fit)  # [repeats, phases, (wall, cpu)]
  occam_median, fit_median = np.median(occam, axis=0), np.median(fit, axis=0)
  report.add("startup", "occam: process start -> first train step", occam_median[-1],
             f"(quickstart, steps_per_loop=1; median of {repeats}; cpu: the child's own)", show=show_seconds)
  report.add("startup", "fit: process start -> first train step", fit_median[-1],
             "(same data, model, L2, Adam, schedule, batch)", show=show_seconds)
  report.add("startup", "occam - fit", np.median(occam[:, -1] - fit[:, -1], axis=0),
             "(median of the paired differences)", show=show_signed_seconds)
  for name, times in (("occam", occam_median), ("fit", fit_median)):
    for phase, seconds in zip(STARTUP_PHASES, np.diff(times, axis=0, prepend=0.0)):
      report.add("startup", f"{name} phase: {phase}", seconds, show=show_seconds)
  report.add("startup", "occam: whole 2-step quickstart run", f"{np.median(whole):.1f} s")
  report.add("startup", "occam: peak RSS of that run", f"{peak_kib / 1024:.0f} MiB")


# ----------------------------------------------------------------------------------------------


def split_cpu() -> None:
  """Two logical CPUs for the replica section; must run before TensorFlow initializes devices."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)


def header(settings: Settings, sections: Sequence[str], load_before: tuple[float, ...],
           seconds: float) -> list[str]:
  from trainer.runtime import compat
  load_after = os.getloadavg()
  load = lambda values: " ".join(f"{v:.2f}" for v in values)  # noqa: E731
  return [
      f"Occam benchmark{' (--quick: smoke run, numbers meaningless)' if settings.quick else ''}",
      f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
      f"load average (1/5/15 min) {load(load_before)} at start, {load(load_after)} at end",
      f"software: TensorFlow {tf.__version__}, Keras {compat.KERAS_VERSION}, "
      f"Python {platform.python_version()}",
      f"compute-bound: {settings.compute.describe()}",
      *([f"dispatch-bound: {settings.dispatch.describe()}"] if settings.dispatch else []),
      f"all loops: Adam({LEARNING_RATE}), L2 {L2_SCALE} on kernels, loss + accuracy tracked; "
      f"medians of {settings.repeats} interleaved repeats after 1 warm-up; "
      "ratio > 1 means the first is faster; cost = time per step with / without - 1",
      "columns: wall = wall-clock time; cpu = this process's CPU time (all threads), immune to other load",
      *([f"sections: {', '.join(sections)} (of {', '.join(SECTIONS)})"]
        if tuple(sections) != SECTIONS else []),
      f"benchmark wall time: {seconds:.0f} s",
      *([f"NOTE: the load average exceeded the {os.cpu_count()} CPUs: other processes held the cores, "
         "so wall-time ratios carry their noise; the cpu column (this process's CPU seconds) does not"]
        if max(load_before[0], load_after[0]) > (os.cpu_count() or 1) else []),
  ]


def parse_sections(text: str) -> tuple[str, ...]:
  """`--sections=costs,frameworks` -> the named sections in print order; an unknown name is an error."""
  names = {name.strip() for name in text.split(",") if name.strip()}
  unknown = names - set(SECTIONS)
  if unknown or not names:
    raise argparse.ArgumentTypeError(f"unknown or no section in {text!r}; choose from {', '.join(SECTIONS)}")
  return tuple(section for section in SECTIONS if section in names)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="tiny models, one repeat, no startup section: a smoke run, numbers meaningless")
  parser.add_argument("--sections", type=parse_sections,
                      help=f"comma-separated subset of {','.join(SECTIONS)} (default: all; with --quick: "
                           "all but startup)")
  args = parser.parse_args(argv)
  settings = QUICK if args.quick else FULL
  sections = args.sections or (QUICK_SECTIONS if args.quick else SECTIONS)
  split_cpu()
  tf.get_logger().setLevel("ERROR")
  started, load_before = time.perf_counter(), os.getloadavg()
  report = Report()
  mirrored = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(NUM_LOGICAL_CPUS)])
              if "replicas" in sections else None)
  with tempfile.TemporaryDirectory() as model_dir:
    if "startup" in sections:
      section_startup(report, model_dir, settings.repeats)
    groups = []
    for spec in settings.models:
      group = build_group(spec, settings, sections, mirrored, model_dir)
      time_interleaved(list(group.variants.values()), settings.repeats)
      groups.append(group)
    compute = groups[0]
    if "frameworks" in sections:
      for group in groups:
        report_frameworks(group, settings, report)
    if "flops" in sections:
      report_flops(compute, settings, report)
    if "costs" in sections:
      for group in groups:
        report_costs(group, settings, report)
    if "scaling" in sections:
      section_scaling(compute, settings, report, model_dir)
    if "sam" in sections:
      for group in groups:
        report_sam(group, settings, report)
    if "replicas" in sections:
      for group in groups:
        report_replicas(group, report)
  report.print(header(settings, sections, load_before, time.perf_counter() - started))


if __name__ == "__main__":
  main()
