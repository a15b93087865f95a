r"""Occam's performance benchmark: throughput against a bare loop and Keras `fit`, and what extras cost.

    python scripts/benchmark.py            # the full run (a few minutes on 2 cores)
    python scripts/benchmark.py --quick    # tiny models, one repeat: a smoke run, numbers meaningless
    python scripts/benchmark.py --sections=frameworks,costs   # only some sections
    python scripts/benchmark.py --sections=sam                # what SAM's second pass costs

Everything runs in one process (the startup section times child processes: Occam's command line
and the same run as a Keras `fit` program). Variants that are compared with each other are built
together and then timed interleaved (A B C A B C ...) and repeated (`timing`); each figure is the
median over repeats, so load that comes and goes on a shared machine hits every variant alike and
the *ratios* are what to read. Absolute steps/sec are printed for the record.

Occam is measured through its public seams, as `trainer.train` runs (`occam`); the bare loop and
Keras `fit` train the same MLP on the same pipeline (`mlp`).

The Monitor's cost is the default run against one bound with `Trainer.monitor = @MonitorOff()`, a
`Monitor` whose `after_loop` computes nothing: the host loop without the Monitor's call, reached
through the config. The cost of the built-in metric accumulators is not measured: no public setting
builds a `TrainProgram` without them, and the benchmark does not patch Occam's internals.

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
import os
import platform
import tempfile
import time
from typing import Callable, Sequence

import tensorflow as tf

from trainer.benchmarks import mlp, startup
from trainer.benchmarks.mlp import ModelSpec
from trainer.benchmarks.report import Report, rates, show_cost, show_gflops, show_percent
from trainer.benchmarks.timing import Variant, cost, ratio, time_interleaved
from trainer.runtime import compat, strategy

NUM_LOGICAL_CPUS = 2
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
# The variants of one model, built together and timed side by side


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
  k, examples = spec.steps_per_loop, settings.num_examples

  def occam(label: str, regularizers: str = "@L2()", jit_compile: bool = False, monitor: bool = True,
            **kwargs) -> Callable[[], Variant]:
    bindings = mlp.occam_bindings(spec, examples, regularizers=regularizers, jit_compile=jit_compile,
                                  monitor=monitor)
    return lambda: mlp.occam_variant(label, spec, bindings, model_dir=model_dir, **kwargs)

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
      "peak": lambda: mlp.matmul_variant(settings.matmul_size),
  }
  for jit in (False, True):
    factories[with_jit("bare", jit)] = lambda jit=jit: mlp.bare_variant(f"bare jit={jit}", spec, examples,
                                                                        jit_compile=jit)
    factories[with_jit("fit loop", jit)] = lambda jit=jit: mlp.keras_fit_variant(
        f"fit spe={k} jit={jit}", spec, examples, steps_per_execution=k, jit_compile=jit)
    factories[with_jit("fit step", jit)] = lambda jit=jit: mlp.keras_fit_variant(
        f"fit spe=1 jit={jit}", spec, examples, steps_per_execution=1, jit_compile=jit)
  return ModelGroup(spec, {key: factories[key]() for key in variants_needed(spec, settings, sections)})


# ----------------------------------------------------------------------------------------------
# Sections: each reads the timed variants of its group and adds rows (and targets) to the report


def report_frameworks(group: ModelGroup, settings: Settings, report: Report) -> None:
  """Occam vs the bare loop and vs `fit` at steps_per_execution = steps_per_loop and at 1, jit off/on."""
  name, k = group.spec.name, group.spec.steps_per_loop
  default_jit = mlp.fit_auto_jit(group.spec)
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
  best_occam = max((group[with_jit("occam", jit)] for jit in settings.jit), key=lambda v: v.rate[0])
  best_bare = max((group[with_jit("bare", jit)] for jit in settings.jit), key=lambda v: v.rate[0])
  report.add("flops", "tf.matmul peak (float32)", peak, f"{group['peak'].label} in one tf.function",
             show=show_gflops)
  for variant in (best_occam, best_bare):
    report.add("flops", f"{variant.label} step", variant.rate * flops,
               f"{flops / 1e9:.2f} GFLOP/step = 3 x sum 2*B*fan_in*fan_out", show=show_gflops)
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
    none = mlp.occam_bindings(spec, settings.num_examples, regularizers="")
    all_terms = mlp.occam_bindings(spec, settings.num_examples, regularizers=REGULARIZER_SETS[ALL_TERMS])
    plain = mlp.occam_variant("none", spec, none, model_dir=model_dir)
    terms = mlp.occam_variant("all", spec, all_terms, model_dir=model_dir)
    time_interleaved([plain, terms], settings.repeats)
    pairs[width] = (plain, terms, spec)
  for width in sorted(pairs):
    plain, terms, spec = pairs[width]
    report.add("scaling", f"all terms at width {width} ({spec.parameters:,} parameters)", cost(terms, plain),
               rates(terms, plain), show=show_cost)


# ----------------------------------------------------------------------------------------------


def header(settings: Settings, sections: Sequence[str], load_before: tuple[float, ...],
           seconds: float) -> list[str]:
  """The lines above the table: the machine, the software, the models and how to read the figures."""
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
      f"all loops: Adam({mlp.LEARNING_RATE}), L2 {mlp.L2_SCALE} on kernels, loss + accuracy tracked; "
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


def run(settings: Settings, sections: Sequence[str], model_dir: str) -> Report:
  """Builds and times every variant `sections` read, then fills the report in print order.

  The CPU must already be split into `NUM_LOGICAL_CPUS` devices when "replicas" is among `sections`.
  """
  report = Report()
  mirrored = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(NUM_LOGICAL_CPUS)])
              if "replicas" in sections else None)
  if "startup" in sections:
    startup.section_startup(report, model_dir, settings.repeats)
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
  return report


def main(argv: Sequence[str] | None = None) -> int:
  """The command line of `scripts/benchmark.py`; a bad `--sections` exits with status 2."""
  parser = argparse.ArgumentParser(prog="benchmark.py", description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="tiny models, one repeat, no startup section: a smoke run, numbers meaningless")
  parser.add_argument("--sections", type=parse_sections,
                      help=f"comma-separated subset of {','.join(SECTIONS)} (default: all; with --quick: "
                           "all but startup)")
  args = parser.parse_args(argv)
  settings = QUICK if args.quick else FULL
  sections = args.sections or (QUICK_SECTIONS if args.quick else SECTIONS)
  strategy.split_cpu(NUM_LOGICAL_CPUS)
  tf.get_logger().setLevel("ERROR")
  started, load_before = time.perf_counter(), os.getloadavg()
  with tempfile.TemporaryDirectory() as model_dir:
    report = run(settings, sections, model_dir)
  report.print(header(settings, sections, load_before, time.perf_counter() - started))
  return 0
