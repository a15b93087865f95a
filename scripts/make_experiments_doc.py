r"""Runs the experiment sweeps of docs/EXPERIMENTS.md and regenerates the doc from their outputs.

    python scripts/make_experiments_doc.py --root=/tmp/occam_experiments --run --parallel=2

With `--run` each claim's sweeps are run (resumably: finished points are skipped) with exactly the
commands printed in the doc; without it the doc is rebuilt from sweeps already on disk. With
`--only=claim8,claim9 --update` only those claims' sections are rebuilt; the header and every other
section stay as the existing doc has them, and the header gains a line saying what was regenerated. Tables,
plots and verdicts are computed from the event files by `occam-report`; nothing in the doc's
results is typed by hand. A claim whose sweep is missing is listed as not measured. Plots are copied
to `docs/experiments/`, the doc written to `docs/EXPERIMENTS.md`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
import shlex
import shutil
import sys
from typing import Callable, Sequence

from doc_sweeps import REPO, Sweep, common_arguments, machine, run_sweeps, wall_time, write_doc

from trainer.experiments import intervals, plots, report_data
from trainer.experiments import report as report_lib
from trainer.experiments import sweep as sweep_lib

DOC = os.path.join(REPO, "docs", "EXPERIMENTS.md")
PLOTS = os.path.join(REPO, "docs", "experiments")
# Measurements made by other commands than the claims' sweeps (the tuning one): appended verbatim.
APPENDIX = os.path.join(PLOTS, "tuning.md")
SEEDS = "Trainer.seed=[0, 1, 2]"
# Columns every claim's table shows, before its own panels (the full table is in summary.csv).
TABLE = ("eval_acc", "best_eval_acc", "test_acc", "train_acc", "gap_acc", "weights_l2")
DOC_DPI = 100  # The plots are committed: readable on screen, a fraction of the size of print resolution.


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim of the issue, the sweeps that measure it, how to plot them, and its verdict."""
  key: str
  title: str
  sweeps: tuple[Sweep, ...]
  verdict: Callable[[report_lib.Report], str]
  panels: tuple[str, ...] = report_lib.DEFAULT_PANELS
  curves: tuple[str, ...] = report_lib.DEFAULT_CURVES
  x_key: str | None = None
  note: str = ""


def _series(report: report_lib.Report) -> dict[str, list[report_lib.Group]]:
  series: dict[str, list[report_lib.Group]] = {}
  for group in report.groups:
    series.setdefault(group.series, []).append(group)
  return series


def _cell(group: report_lib.Group, column: str) -> str:
  """The report's cell (`report_data.cell`: mean ± the 95% interval's half-width over seeds, as in the
  tables), `n/a` when no run has the column."""
  return report_data.cell(group, column) or "n/a"


def _best(groups: Sequence[report_lib.Group], column: str = "eval_acc") -> report_lib.Group:
  return max(groups, key=lambda g: g.mean.get(column, -math.inf))


def _holds(condition: bool) -> str:
  return "**Holds.**" if condition else "**Does not hold in this measurement.**"


def verdict_u_curve(report: report_lib.Report) -> str:
  """Interior optimum of eval accuracy; training accuracy on the noisy labels falls with strength."""
  groups = report.groups
  best, low, high = _best(groups), groups[0], groups[-1]
  interior = best not in (low, high)
  worse = all(best.mean["eval_acc"] - g.mean["eval_acc"] > g.std["eval_acc"] + best.std["eval_acc"]
              for g in (low, high))
  train_falls = high.mean["train_acc"] < low.mean["train_acc"]
  return (f"{_holds(interior and worse and train_falls)} Final eval accuracy {_cell(low, 'eval_acc')} at "
          f"strength {low.x:g}, best {_cell(best, 'eval_acc')} at {best.x:g}, {_cell(high, 'eval_acc')} "
          f"at {high.x:g} (eval error {1 - low.mean['eval_acc']:.1%} → {1 - best.mean['eval_acc']:.1%} → "
          f"{1 - high.mean['eval_acc']:.1%}). Training accuracy on the noisy labels: "
          f"{_cell(low, 'train_acc')} → {_cell(best, 'train_acc')} → {_cell(high, 'train_acc')}"
          f" (20% of the training labels are wrong, so 0.8 is the accuracy of a model that ignores the "
          f"noise).")


def verdict_decoupled(report: report_lib.Report) -> str:
  """Best point of each arm; holds when the best accuracies differ by more than the seed spread."""
  lines, bests = [], []
  for series, groups in _series(report).items():
    best = _best(groups)
    bests.append(best)
    lines.append(f"{series}: best eval accuracy {_cell(best, 'eval_acc')} at {best.x:g} (weight norm "
                 f"{_cell(best, 'weights_l2')}, training accuracy {_cell(best, 'train_acc')}); at "
                 f"{groups[-1].x:g}: {_cell(groups[-1], 'eval_acc')}")
  differ = len(bests) == 2 and (abs(bests[0].mean["eval_acc"] - bests[1].mean["eval_acc"])
                                > bests[0].std["eval_acc"] + bests[1].std["eval_acc"])
  return (f"{_holds(differ)} (holds = the best eval accuracies of the two differ by more than the "
          f"seed spread, i.e. no choice of strength makes one behave like the other here; the grids "
          f"are coarse, so the best of each is only known to within a grid step). The x axis is "
          f"`L2.scale` for L2 and `DecoupledWeightDecay.rate` for decoupled decay: different units, "
          f"compare shapes and best points.\n\n" + "\n".join(f"- {line}" for line in lines))


def verdict_sparsity(report: report_lib.Report) -> str:
  """Exact zeros per arm at its strongest setting, and the near-zero fraction."""
  lines, maxima = [], {}
  for series, groups in _series(report).items():
    top = max(groups, key=lambda g: g.mean.get("sparsity", -1))
    maxima[series] = top.mean.get("sparsity", math.nan)
    lines.append(f"{series}: largest exact-zero fraction {_cell(top, 'sparsity')} at {top.x:g} "
                 f"(|w| < 1e-3: {_cell(top, 'near_zero')}, eval accuracy {_cell(top, 'eval_acc')})")
  subgradient = [v for k, v in maxima.items() if "ProximalL1" not in k]
  proximal = [v for k, v in maxima.items() if "ProximalL1" in k]
  holds = bool(subgradient and proximal) and max(subgradient) < 0.01 < max(proximal)
  return f"{_holds(holds)}\n\n" + "\n".join(f"- {line}" for line in lines)


def verdict_bias(report: report_lib.Report) -> str:
  """The best strength and accuracy with and without bias exclusion."""
  best = {series: _best(groups) for series, groups in _series(report).items()}
  lines = [f"{series}: best eval accuracy {_cell(g, 'eval_acc')} at `L2.scale={g.x:g}`"
           for series, g in best.items()]
  excluded = next((g for s, g in best.items() if "=True" in s), None)
  included = next((g for s, g in best.items() if "=False" in s), None)
  holds = (excluded is not None and included is not None
           and included.mean["eval_acc"] - excluded.mean["eval_acc"]
           <= included.std["eval_acc"] + excluded.std["eval_acc"])
  return (f"{_holds(holds)} (holds = decaying biases too does not beat the default by more than the "
          f"seed spread)\n\n" + "\n".join(f"- {line}" for line in lines))


def verdict_flatness(report: report_lib.Report) -> str:
  """Sharpness at no, best and strongest regularization, next to the weight norm."""
  groups = report.groups
  if "hessian_top" not in groups[0].mean:
    return "**Not measured:** the runs carry no `sharpness/*` tags (the trainer did not write them)."
  best, low, high = _best(groups), groups[0], groups[-1]
  flatter = best.mean["hessian_top"] < low.mean["hessian_top"] and best.mean["sam"] < low.mean["sam"]
  rows = [f"- strength {g.x:g}: Hessian top eigenvalue {_cell(g, 'hessian_top')}, SAM "
          f"{_cell(g, 'sam')}, magnitude-aware SAM {_cell(g, 'sam_magnitude_aware')}, weight norm "
          f"{_cell(g, 'weights_l2')}, eval accuracy {_cell(g, 'eval_acc')}" for g in (low, best, high)]
  return (f"{_holds(flatter)} (holds = the best strength has a smaller top eigenvalue and SAM "
          f"sharpness than no regularization)\n\n" + "\n".join(rows) + "\n\nSharpness is not "
          "invariant to the scale of the weights (Dinh et al., 2017): L2 shrinks the weights, and a "
          "ReLU network can be made arbitrarily sharp or flat by rescaling layers without changing "
          "its function. Read the eigenvalue and plain SAM next to the weight norm; the "
          "magnitude-aware SAM perturbs each weight in proportion to |w| and is the fairer comparison "
          "across strengths.")


def _baseline(report: report_lib.Report) -> report_lib.Group:
  """The unregularized group of claim 8's baseline sweep (`L2.scale=0`), the reference of claims 8 and 9."""
  return next(g for g in report.groups if g.series == BASELINE_SWEEP and g.x == 0)


def _arm(group: report_lib.Group) -> str:
  """A group's name in a verdict: its sweep and the bindings that set its strength (`SAM.rho=0.05`)."""
  strength = ", ".join(f"{k}={v}" for k, v in group.bindings.items() if k in STRENGTH_KEYS)
  return f"{group.series} ({strength})"


def verdict_sam_flatness(report: report_lib.Report) -> str:
  """Claim 5's measurement for SAM: sharpness next to the weight norm, against no regularization."""
  groups = report.groups
  if "hessian_top" not in groups[0].mean:
    return "**Not measured:** the runs carry no `sharpness/*` tags (the trainer did not write them)."
  none = _baseline(report)
  trained = [g for g in groups if g.series != BASELINE_SWEEP]
  best = _best(trained)
  flatter = best.mean["hessian_top"] < none.mean["hessian_top"] and best.mean["sam"] < none.mean["sam"]
  rows = [f"- {_arm(g)}: Hessian top eigenvalue {_cell(g, 'hessian_top')}, SAM {_cell(g, 'sam')}, "
          f"magnitude-aware SAM {_cell(g, 'sam_magnitude_aware')}, weight norm {_cell(g, 'weights_l2')}, "
          f"training accuracy on the noisy labels {_cell(g, 'train_acc')}, eval accuracy "
          f"{_cell(g, 'eval_acc')}, gap {_cell(g, 'gap_acc')}" for g in groups]
  memorized = min(g.mean["train_acc"] for g in trained)
  l2 = next(g for g in groups if g.series == BASELINE_SWEEP and g.x > 0)
  probes = ("hessian_top", "sam", "sam_magnitude_aware")
  flatter_than_l2 = all(g.mean[p] < l2.mean[p] for g in trained for p in probes)
  early = _best(trained, "best_eval_acc")
  return (f"{_holds(flatter)} (holds = the SAM or ASAM setting with the best eval accuracy, "
          f"{_arm(best)}, has a smaller top eigenvalue and SAM sharpness than no regularization; the "
          f"rule of claim 5)\n\n" + "\n".join(rows) + "\n\n"
          f"The lowest training accuracy on the noisy labels among the SAM and ASAM settings is "
          f"{memorized:.3f} (unregularized: {none.mean['train_acc']:.3f}). A network that fits every "
          "label with near-zero loss sits where the cross-entropy Hessian, which scales with p(1 - p), "
          f"vanishes (claim 5). Against claim 1's best L2 ({_arm(l2)}), every SAM and ASAM setting is "
          f"{'flatter' if flatter_than_l2 else 'not flatter'} by all three probes"
          f"{', but the two sit at different training losses' if flatter_than_l2 else ''}. As in claim 5, "
          "read sharpness next to the weight norm (Dinh et al., 2017). Before the noise is fitted, the "
          f"best eval accuracy over the run reaches {_cell(early, 'best_eval_acc')} with {_arm(early)}, "
          f"against {_cell(none, 'best_eval_acc')} "
          "without regularization (`best_eval_acc`).")


def verdict_beyond_penalties(report: report_lib.Report) -> str:
  """Each new regularizer's eval accuracy and gap against no regularization (claim 8's baseline)."""
  none = _baseline(report)
  lines, helped = [], []
  for series, groups in _series(report).items():
    if series == BASELINE_SWEEP:
      continue
    best = _best(groups)
    gain = best.mean["eval_acc"] - none.mean["eval_acc"]
    better = (gain > best.std["eval_acc"] + none.std["eval_acc"]
              and best.mean["gap_acc"] < none.mean["gap_acc"])
    helped += [series] if better else []
    lines.append(f"{_arm(best)}: eval accuracy {_cell(best, 'eval_acc')} ({gain:+.3f} against no "
                 f"regularization), gap {_cell(best, 'gap_acc')}, training accuracy on the noisy labels "
                 f"{_cell(best, 'train_acc')}; " + "; ".join(
                     f"at {g.x:g}: eval {_cell(g, 'eval_acc')}, gap {_cell(g, 'gap_acc')}" for g in groups))
  l2 = next(g for g in report.groups if g.series == BASELINE_SWEEP and g.x > 0)
  verdict = (f"**Holds for {', '.join(helped)}.**" if helped else _holds(False))
  missed = [s for s in _series(report) if s not in helped and s != BASELINE_SWEEP]
  if helped and missed:
    verdict += f" **Not for {', '.join(missed)}.**"
  return (f"{verdict} (holds = the regularizer's best setting raises the final eval accuracy above no "
          f"regularization, {_cell(none, 'eval_acc')} with gap {_cell(none, 'gap_acc')}, by more than "
          f"the two seed spreads, and shrinks the accuracy gap)\n\n"
          + "\n".join(f"- {line}" for line in lines)
          + f"\n\nFor scale: claim 1's best L2 ({_arm(l2)}) reaches eval accuracy {_cell(l2, 'eval_acc')}, "
          f"gap {_cell(l2, 'gap_acc')}.")


AVERAGES = ("ema", "swa")  # the weight averages of claim 10, each evaluated into eval_<name>/


def _final(run: report_lib.Run, directory: str, tag: str) -> float | None:
  series = run.scalars.get(f"{directory}/{tag}")
  return series[-1][1] if series else None


def _spread(values: Sequence[float]) -> str:
  mean, _, halfwidth = intervals.summarize(values)
  return f"{mean:.4g} ± {'n/a' if math.isnan(halfwidth) else f'{halfwidth:.2g}'}"


def verdict_weight_averaging(report: report_lib.Report) -> str:
  """Each average's final eval accuracy and gap against the raw weights of the same runs, paired by seed."""
  rows, lines, narrowed = [], [], []
  for series, groups in _series(report).items():
    runs = [run for group in groups for run in group.runs]
    raw = None  # this series' raw-weight cells: the averages are paired with them, never another series'
    for weights in ("raw",) + AVERAGES:
      directory = "eval" if weights == "raw" else f"eval_{weights}"
      cells = [[_final(run, directory, tag) for run in runs] for tag in
               ("eval/accuracy", "test/accuracy", "train_eval/accuracy", "gap/accuracy")]
      if any(value is None for values in cells for value in values):
        continue
      rows.append(f"| {series} | {weights} | {len(runs)} | " + " | ".join(map(_spread, cells)) + " |")
      if weights == "raw":
        raw = cells
        continue
      if raw is None:
        continue
      differences = [[a - r for a, r in zip(average, reference)] for average, reference in zip(cells, raw)]
      gap_mean, _, gap_halfwidth = intervals.summarize(differences[3])
      if gap_mean + gap_halfwidth < 0:
        narrowed.append(f"{series} ({weights})")
      lines.append(f"{series}, {weights} − raw (paired by seed): eval accuracy {_spread(differences[0])}, "
                   f"test accuracy {_spread(differences[1])}, gap {_spread(differences[3])}")
  verdict = f"**Holds for {', '.join(narrowed)}.**" if narrowed else _holds(False)
  return (f"{verdict} (holds = the average's accuracy gap at the last step is smaller than the raw "
          f"weights' of the same runs: the 95% interval of the paired difference lies below 0)\n\n"
          + "\n".join(f"- {line}" for line in lines)
          + "\n\n| protocol | weights | n | eval_acc | test_acc | train_eval_acc | gap_acc |\n"
          + "|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def verdict_layer_penalty(report: report_lib.Report) -> str:
  """`train/loss = data_loss + model_losses` at every logged step, and a nonzero penalty."""
  worst, smallest = 0.0, math.inf
  for run in report.runs:
    loss, data = dict(run.scalars["train/train/loss"]), dict(run.scalars["train/train/data_loss"])
    penalty = dict(run.scalars.get("train/penalty/model_losses", []))
    for step, value in loss.items():
      worst = max(worst, abs(value - data[step] - penalty.get(step, 0.0)) / max(abs(value), 1e-12))
    smallest = min([smallest] + list(penalty.values()))
  holds = smallest > 0 and worst < 1e-5
  return (f"{_holds(holds)} In every run and at every logged step, `train/loss` = `train/data_loss` + "
          f"`penalty/model_losses` to a relative {worst:.1e}, and the penalty is never zero (smallest "
          f"{smallest:.3g}). The layers' penalty changes the result like claim 1's `L2.scale` does: "
          + "; ".join(f"`KerasL2.l2={g.x:g}`: eval accuracy {_cell(g, 'eval_acc')}, weight norm "
                      f"{_cell(g, 'weights_l2')}" for g in report.groups) + ".")


EXPERIMENTS = "gin_configs/experiments"
BASELINE_SWEEP = "claim8_baseline"
STRENGTH_KEYS = ("L2.scale", "SAM.adaptive", "SAM.rho", "softmax_cross_entropy.label_smoothing",
                 "Mixup.alpha", "CutMix.alpha")
# Claims 8 and 9 share their reference: no regularization and claim 1's best L2, with the probes.
BASELINE = Sweep(BASELINE_SWEEP, f"{EXPERIMENTS}/claim5_flatness.gin", ("L2.scale=[0, 1e-2]", SEEDS))
L2_GRID = "L2.scale=[0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]"
CLAIMS = (
    Claim("claim1", "1. Too little regularization overfits, too much underfits",
          (Sweep("claim1_l2", f"{EXPERIMENTS}/claim1_l2_u_curve.gin", (L2_GRID, SEEDS)),),
          verdict_u_curve, panels=("eval_acc", "train_acc", "gap_acc")),
    Claim("claim2", "2. Decoupled weight decay is not L2 for Adam",
          (Sweep("claim1_l2", f"{EXPERIMENTS}/claim1_l2_u_curve.gin", (L2_GRID, SEEDS)),
           Sweep("claim2_decoupled", f"{EXPERIMENTS}/claim2_decoupled_weight_decay.gin",
                 ("DecoupledWeightDecay.rate=[0, 1e-1, 1, 10, 30, 100]", "Trainer.seed=[0, 1]"))),
          verdict_decoupled, panels=("eval_acc", "gap_acc", "weights_l2"),
          note="The L2 arm is claim 1's sweep (reused, not rerun; 3 seeds), the decoupled arm has 2 seeds."),
    Claim("claim3", "3. L1 zeroes weights only when applied proximally",
          (Sweep("claim3_l1", f"{EXPERIMENTS}/claim3_l1_sparsity.gin",
                 ("Trainer.regularizers=[[@L1()], [@ProximalL1()]]",
                  "L1_STRENGTH=[1e-4, 1e-3, 1e-2, 1e-1, 1]", "Trainer.seed=[0]")),),
          verdict_sparsity, panels=("sparsity", "near_zero", "eval_acc"),
          note="One seed per point. Both arms use Adam, as every other claim; the proximal step "
               "soft-thresholds by `lr * L1_STRENGTH` after the Adam step. With Adam the two arms are "
               "not equally strong at the same `L1_STRENGTH`: Adam rescales the subgradient "
               "`L1_STRENGTH * sign(w)` to steps of about `lr`, while the threshold stays "
               "`lr * L1_STRENGTH`; compare sparsity at equal eval accuracy, not at equal x."),
    Claim("claim4", "4. Regularizing biases does not help",
          (Sweep("claim4_bias", f"{EXPERIMENTS}/claim4_bias_exclusion.gin",
                 ("VariableSelector.exclude_biases_and_norms=[True, False]",
                  "L2.scale=[0, 1e-3, 1e-2, 3e-2]", "Trainer.seed=[0, 1]")),),
          verdict_bias, panels=("eval_acc", "best_eval_acc", "weights_l2"), x_key="L2.scale",
          note="Two seeds per point. The MLP has no normalization layers, so the exclusion is of biases."),
    Claim("claim5", "5. Regularization finds flatter minima",
          (Sweep("claim5_flatness", f"{EXPERIMENTS}/claim5_flatness.gin",
                 ("L2.scale=[0, 1e-3, 1e-2, 3e-2]", "Trainer.seed=[0]")),),
          verdict_flatness, panels=("hessian_top", "sam", "sam_magnitude_aware", "weights_l2", "eval_acc"),
          note="One seed per point; the probes run once, at the last step, on 256 training examples "
               "(with their noisy labels). An unregularized network that fits every training label "
               "with near-zero loss sits where the cross-entropy Hessian, which scales with "
               "p(1 - p), vanishes: such a minimum measures as flat whatever its generalization."),
    Claim("claim6", "6. Forgetting the penalty is impossible here",
          (Sweep("claim6_layer", f"{EXPERIMENTS}/claim6_layer_regularizer.gin",
                 ("KerasL2.l2=[1e-3, 1e-2, 3e-2]", "Trainer.seed=[0]")),),
          verdict_layer_penalty, panels=("eval_acc", "weights_l2", "model_losses"),
          curves=("train/train/loss", "train/train/data_loss", "train/penalty/model_losses")),
)


# After the tuning appendix (claim 7): the regularizers beyond penalties (SAM, label smoothing, Mixup,
# CutMix), each against the same unregularized runs.
LATER_CLAIMS = (
    Claim("claim8", "8. SAM trains for flatness",
          (BASELINE,
           Sweep("claim8_sam", f"{EXPERIMENTS}/claim8_sam_flatness.gin", ("SAM.rho=[0.05, 0.2]", SEEDS)),
           Sweep("claim8_asam", f"{EXPERIMENTS}/claim8_sam_flatness.gin",
                 ("SAM.adaptive=[True]", "SAM.rho=[0.5, 1.0]", SEEDS))),
          verdict_sam_flatness,
          panels=("hessian_top", "sam", "sam_magnitude_aware", "weights_l2", "eval_acc", "gap_acc",
                  "sam_train"),
          note="Three seeds per point. SAM and ASAM wrap the same Adam (1e-3, full batch); the probes run "
               "once, at the last step, on 256 training examples with their noisy labels, as in claim 5. "
               "The baseline sweep is claim 5's config at `L2.scale` 0 (no regularization) and 1e-2 "
               "(claim 1's best). Each SAM step costs two forward and backward passes. `sam_train` is "
               "the loss increase at SAM's own ascent step on the training batch (`sharpness/sam_train`)."),
    Claim("claim9", "9. Label smoothing, Mixup and CutMix on noisy labels",
          (BASELINE,
           Sweep("claim9_smoothing", f"{EXPERIMENTS}/claim9_label_smoothing.gin",
                 ("softmax_cross_entropy.label_smoothing=[0.1, 0.3]", SEEDS)),
           Sweep("claim9_mixup", f"{EXPERIMENTS}/claim9_mixup.gin", ("Mixup.alpha=[0.2, 1.0]", SEEDS)),
           Sweep("claim9_cutmix", f"{EXPERIMENTS}/claim9_cutmix.gin", ("CutMix.alpha=[0.2, 1.0]", SEEDS))),
          verdict_beyond_penalties, panels=("eval_acc", "gap_acc", "train_acc", "test_acc"),
          note="Three seeds per point; the baseline runs are claim 8's (reused, not rerun). The x axis "
               "is each sweep's own strength (label smoothing, or the Beta parameter alpha): different "
               "units, compare each arm with the baseline. With label smoothing `eval/loss` is the "
               "smoothed loss, so the losses are not comparable across arms; the accuracies are. "
               "`train_acc` on a mixed batch credits the own label lam and the partner's 1 - lam."),
    Claim("claim10", "10. Weight averaging (EMA, SWA) and the generalization gap",
          (Sweep("claim10_digits", f"{EXPERIMENTS}/claim10_weight_averaging.gin", (SEEDS,)),
           Sweep("claim10_mnist1d", f"{EXPERIMENTS}/claim10_weight_averaging_mnist1d.gin", (SEEDS,))),
          verdict_weight_averaging, panels=("eval_acc", "gap_acc", "test_acc"),
          curves=("eval/eval/accuracy", "eval_ema/eval/accuracy", "eval_swa/eval/accuracy"),
          note="Three seeds per protocol: the noisy digits (the setup above) and MNIST-1D with the "
               "paper's MLP protocol (`gin_configs/mnist1d/mlp.gin`: Adam 1e-2, batch 100, 6,000 steps, "
               "3,500 training and 500 validation examples, clean labels). EMA and SWA ride along in the "
               "same runs (neither changes the trajectory, bit for bit), so each seed's raw weights are "
               "its own baseline and the comparison is paired. Settings chosen before measuring: EMA "
               "over about the last 10% of training (decay 0.995 on the digits, 0.998 on MNIST-1D), SWA "
               "over the second half (digits: from step 1000 every 10 steps; MNIST-1D: from step 3000 "
               "every epoch of 35 steps). `gap_acc` is `train_eval/accuracy − eval/accuracy` of the "
               "weights named, on the fixed training subset (the digits' noisy labels). The table "
               "below the verdict is per protocol and weights; the standard table shows the raw weights. The "
               "curves' panels, left to right: the raw weights (`eval/`), EMA (`eval_ema/`), SWA "
               "(`eval_swa/`, from its first snapshot)."),
)


def claim_section(claim: Claim, root: str, parallel: int) -> str:
  """The doc section of one claim: commands, wall time, verdict, table and plots."""
  dirs = [os.path.join(root, s.name) for s in claim.sweeps]
  commands = "\n".join(shlex.join(s.argv(root, parallel)) for s in claim.sweeps)
  report_argv = (["occam-report", *dirs, f"--out_dir={os.path.join(root, claim.key)}",
                  f"--panels={','.join(claim.panels)}", f"--curves={','.join(claim.curves)}"]
                 + ([f"--x={claim.x_key}"] if claim.x_key else []))
  lines = [f"## {claim.title}", "", "```sh", commands, shlex.join(report_argv), "```", ""]
  if claim.note:
    lines += [claim.note, ""]
  missing = [d for d in dirs if not os.path.exists(os.path.join(d, sweep_lib.SWEEP_FILE))]
  if missing:
    return "\n".join(lines + [f"**Not measured yet:** no sweep in {missing}.", ""])
  report = report_lib.build(dirs, os.path.join(root, claim.key), x_key=claim.x_key,
                            panels=claim.panels, curves=claim.curves,
                            style=plots.PlotStyle(dpi=DOC_DPI, title=claim.title))
  lines += [f"Wall time: {wall_time(d)} (`{os.path.basename(d)}`)." for d in dirs] + [""]
  present = report_lib.present_columns(report.runs)
  columns = [c for c in dict.fromkeys(TABLE + claim.panels) if c in present]
  lines += [claim.verdict(report), "", report_lib.markdown_table(report.groups, columns, report.x_label)]
  for plot in ("vs_strength.png", "curves.png"):
    if plot in report.files:
      name = f"{claim.key}_{plot}"
      shutil.copyfile(report.files[plot], os.path.join(PLOTS, name))
      lines += [f"![{claim.title}: {plot[:-4]}](experiments/{name})", ""]
  return "\n".join(lines)


HEADER = """# Experiments: regularization claims, measured

Generated by `python scripts/make_experiments_doc.py --root={root} --run --parallel={parallel}` on
{date}. Do not edit by hand: rerun the script. Every number below is read from the runs' TensorBoard
event files by `occam-report`; each verdict is computed by a rule stated next to it.

Machine: {machine}. The machine was shared with other engineers' test runs while these sweeps ran,
so the wall times are inflated and only indicative.

Setup (`gin_configs/experiments/noisy_digits.gin`): 500 training digits of the bundled 8x8 set with
20% of their labels replaced by a wrong class (validation: 180 clean, test: 360 clean), an MLP
64-256-256-10, full-batch Adam at 1e-3 for 2,000 steps, evaluated every 100 steps. Columns: `eval_*`
on the validation split at the last step (`best_*`: best over evaluations), `train_acc` the running
training accuracy on the noisy labels over the last 100 steps, `train_eval_acc` the same in
inference mode, `gap_acc` = train_eval − eval accuracy, `weights_l2` the global L2 norm of the
penalized kernels, `sparsity` the fraction of exactly-zero kernel entries. Every cell, in the tables and
in the verdicts, is the mean ± the half-width of its 95% confidence interval over the `n` seeds
(Student t; `n/a` for one seed). A verdict rule's "seed spread" is the sum of the two sample standard
deviations over seeds.
"""


def split_doc(text: str) -> tuple[str, dict[str, str]]:
  """The doc's header (before the first `## ` line) and its sections by heading line, as written."""
  parts = re.split(r"(?m)^(?=## )", text)
  return parts[0], {part.splitlines()[0]: part for part in parts[1:]}


def main(argv: Sequence[str] | None = None) -> int:
  parser = common_arguments(__doc__.split("\n\n")[0].strip(), "/tmp/occam_experiments",
                            "comma-separated claim keys to run (doc has all)")
  parser.add_argument("--update", action="store_true", help="with --only: rebuild only those claims' "
                      "sections, keep the rest of the existing doc")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  only = set(filter(None, args.only.split(",")))
  if args.update and not only:
    parser.error("--update needs --only (the claims whose sections to rebuild)")
  if args.run:
    failed = run_sweeps([s for c in CLAIMS + LATER_CLAIMS if not only or c.key in only for s in c.sweeps],
                        args.root, args.parallel)
    if failed:
      print(f"not writing {DOC}: sweeps with failed points: {', '.join(failed)} (their logs are listed "
            "above); rerun the same command to resume them", file=sys.stderr)
      return 1
  os.makedirs(PLOTS, exist_ok=True)
  date = datetime.date.today().isoformat()
  kept_header, kept = "", {}
  if args.update:
    with open(DOC) as file:
      kept_header, kept = split_doc(file.read())

  def section(claim: Claim) -> str:
    if args.update and claim.key not in only and f"## {claim.title}" in kept:
      return kept[f"## {claim.title}"].rstrip("\n") + "\n"
    return claim_section(claim, args.root, args.parallel)

  sections = [section(claim) for claim in CLAIMS]
  if os.path.exists(APPENDIX):
    with open(APPENDIX) as file:
      sections.append(file.read())
  sections += [section(claim) for claim in LATER_CLAIMS]
  if args.update:
    command = (f"python scripts/make_experiments_doc.py --root={args.root} --run --parallel={args.parallel} "
               f"--only={args.only} --update")
    # An earlier update's line for the same claims is replaced; one for other claims stays (it says how
    # those sections' cells are computed).
    kept_header = re.sub(rf"\n+Updated on [^\n]*--only={re.escape(args.only)} [^\n]*\n?", "\n", kept_header)
    header = (kept_header.rstrip("\n") + f"\n\nUpdated on {date}: the sections of {args.only} regenerated "
              f"by `{command}` on {machine()}; their cells are mean ± the half-width of the 95% Student-t "
              "interval over seeds (`n/a` for one seed), the other sections' as described above.\n")
  else:
    header = HEADER.format(root=args.root, parallel=args.parallel, machine=machine(), date=date)
  return write_doc(DOC, header, sections)


if __name__ == "__main__":
  sys.exit(main())
