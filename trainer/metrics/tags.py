"""The one registry of TensorBoard tags: what each tag means, where it is written, which way is better.

Tags are public interface: dashboards, sweeps and papers depend on their names. Everything that needs
to know about a tag derives it from `TAGS` instead of keeping its own list: early stopping's 'auto'
direction and the metrics it may watch, the per-loop console line, `occam-report`'s table columns,
and the docs/METRICS.md tables (a test checks that every registered tag is documented there, and that
every tag a real run writes is registered).

A pattern may hold one placeholder in angle brackets: `penalty/<term>` matches `penalty/l2`;
`<term>` and `<layer>` stand for one path component, `<path>` for any number of them.

>>> find("eval/accuracy").higher_is_better
True
>>> find("penalty/l2").pattern
'penalty/<term>'
"""

from __future__ import annotations

import dataclasses
import functools
import re

TRAIN, EVAL = "train", "eval"  # event directories below model_dir
# Each event directory is also an HParams session (trainer/metrics/dashboard.py): `Tag.directory` of
# the session's tag, written in every one of them.
SESSIONS, EACH = (TRAIN, EVAL), "*"

# A weight average (`EMA`, `SWA`) is evaluated into its own run beside `eval`, `eval_<average>` (e.g.
# `eval_ema`), with the evaluation directory's tags: eval/*, train_eval/*, gap/* and test/*.
AVERAGED = "eval_<average>"


def averaged_directory(name: str) -> str:
  """The event directory of the weight average `name`: `eval_<name>`."""
  return AVERAGED.replace("<average>", name)


def averaged_tags() -> tuple[str, ...]:
  """The tags an averaged run (`eval_<average>`) holds: the evaluation directory's scalars."""
  return tuple(entry.pattern for entry in TAGS if entry.directory == EVAL and entry.kind == SCALAR
               and entry.pattern.split("/")[0] in ("eval", "train_eval", "gap", "test"))


SCALAR, TEXT, HISTOGRAM, HPARAMS, LAYOUT = "scalar", "text", "histogram", "hparams", "layout"


@dataclasses.dataclass(frozen=True)
class Tag:
  """One tag (or family of tags) a run writes.

  Attributes:
    pattern: the tag, or a pattern with one `<placeholder>` (see the module docstring).
    directory: the event directory below model_dir: 'train', 'eval', or '*' (`EACH`: the HParams session).
    doc: one line saying what the value is, for docs/METRICS.md and TensorBoard.
    kind: 'scalar', 'text', 'histogram', 'hparams' or 'layout' (the custom-scalars layout).
    higher_is_better: True (accuracies), False (losses, gaps, sharpness), None (neither: norms, rates).
    evaluated: written by every validation evaluation, so early stopping may watch it.
    console: shown on the one log line per host loop.
    column: its column name in `occam-report` tables (the value at the run's last step).
    hparams_metric: declared as a metric of the HParams dashboard (trainer/metrics/dashboard.py): the
      few numbers a comparison of runs is about, not every norm and timing.
  """

  pattern: str
  directory: str
  doc: str
  kind: str = SCALAR
  higher_is_better: bool | None = None
  evaluated: bool = False
  console: bool = False
  column: str | None = None
  hparams_metric: bool = False

  @functools.cached_property
  def _regex(self) -> re.Pattern:
    parts = re.split(r"(<[a-z_]+>)", self.pattern)
    regex = "".join(("(.+)" if part == "<path>" else "([^/]+)") if part.startswith("<") else re.escape(part)
                    for part in parts)
    return re.compile(regex)

  def matches(self, tag: str) -> bool:
    return bool(self._regex.fullmatch(tag))


_LOSS, _ACCURACY = False, True

TAGS: tuple[Tag, ...] = (
    # Per host loop, from the training steps (training mode: dropout on, batch statistics).
    Tag("train/loss", TRAIN, "mean over the loop's steps of data_loss + penalty/total (the differentiated "
        "objective: update terms are outside it, see penalty/<term>)",
        higher_is_better=_LOSS, console=True, hparams_metric=True),
    Tag("train/data_loss", TRAIN, "mean per-example loss on the training batches (training mode)",
        higher_is_better=_LOSS, console=True),
    Tag("train/accuracy", TRAIN, "mean accuracy on the training batches (training mode; on a mixed batch a "
        "prediction scores lam for the own label and 1 - lam for the partner's)",
        higher_is_better=_ACCURACY, console=True, column="train_acc", hparams_metric=True),
    Tag("train/mixing_lambda", TRAIN, "Mixup/CutMix: mean over the loop's steps and replicas of the weight "
        "lam of each example's own label (CutMix: the area kept)"),
    Tag("penalty/total", TRAIN, "the sum of the unscaled penalties of the loss terms and model_losses",
        higher_is_better=_LOSS, column="penalty", hparams_metric=True),
    Tag("penalty/model_losses", TRAIN, "the sum of the layers' own regularizer penalties (model.losses)",
        higher_is_better=_LOSS, column="model_losses"),
    Tag("penalty/<term>", TRAIN, "each loss term's unscaled penalty, e.g. penalty/l2 = scale * sum(w^2); for "
        "an update term, what it adds to the objective at the loop's end (not in train/loss)",
        higher_is_better=_LOSS),
    Tag("optimizer/learning_rate", TRAIN, "the learning rate lr_t at the loop's last step"),
    Tag("optimizer/weight_decay", TRAIN, "the effective per-step decay factor d_t of the decoupled terms"),
    Tag("perf/steps_per_sec", TRAIN,
        "training steps per second in the loop (the first loop includes tracing)"),
    Tag("perf/examples_per_sec", TRAIN, "training examples per second in the loop"),
    # Loop-boundary statistics (Monitor), formulas in docs/METRICS.md.
    Tag("norms/weights_l2", TRAIN, "global L2 norm of the regularized weights", column="weights_l2",
        hparams_metric=True),
    Tag("norms/weights_l1", TRAIN, "global L1 norm of the regularized weights"),
    Tag("norms/excluded_l2", TRAIN, "global L2 norm of the variables the default selector excludes"),
    Tag("norms/grad_l2", TRAIN, "L2 norm of the objective's gradient on the fixed probe batch"),
    Tag("norms/distance_from_init", TRAIN, "L2 distance of the trainable weights from their initial values"),
    Tag("norms/<layer>/kernel_l2", TRAIN, "L2 norm of one layer's kernel"),
    Tag("sparsity/zero_fraction", TRAIN, "fraction of regularized weights exactly 0", column="sparsity",
        hparams_metric=True),
    Tag("sparsity/near_zero_fraction", TRAIN, "fraction of regularized weights with |w| below the threshold",
        column="near_zero"),
    Tag("sharpness/hessian_top_eigenvalue", TRAIN, "top Hessian eigenvalue of the probe-batch loss",
        higher_is_better=_LOSS, column="hessian_top"),
    Tag("sharpness/hessian_iterations", TRAIN, "power iterations (HVPs) the eigenvalue estimate used"),
    Tag("sharpness/sam", TRAIN, "SAM sharpness L(w + rho g/|g|) - L(w) on the probe batch",
        higher_is_better=_LOSS, column="sam"),
    Tag("sharpness/sam_magnitude_aware", TRAIN, "magnitude-aware (ASAM) sharpness on the probe batch",
        higher_is_better=_LOSS, column="sam_magnitude_aware"),
    Tag("sharpness/sam_train", TRAIN, "SAM: mean over the loop of the objective's increase L(w + e) - L(w) "
        "on the training batches, at the ascent step SAM trains against", higher_is_better=_LOSS,
        column="sam_train"),
    Tag("sharpness/sam_train_perturbation_norm", TRAIN, "SAM: mean norm ||e|| of the ascent step (rho for "
        "plain SAM; ASAM's follows the weights)"),
    Tag("weights/<path>", TRAIN, "histogram of one regularized variable", kind=HISTOGRAM),
    Tag("config/operative_gin", TRAIN, "the resolved gin config of the run", kind=TEXT),
    Tag("regularizers/<term>", TRAIN, "the variables a term covers, with multipliers", kind=TEXT),
    # Every validation evaluation (inference mode).
    Tag("eval/loss", EVAL, "mean loss on the validation split", higher_is_better=_LOSS, evaluated=True,
        console=True, column="eval_loss", hparams_metric=True),
    Tag("eval/accuracy", EVAL, "accuracy on the validation split", higher_is_better=_ACCURACY, evaluated=True,
        console=True, column="eval_acc", hparams_metric=True),
    Tag("train_eval/loss", EVAL, "mean loss on a fixed training subset, inference mode",
        higher_is_better=_LOSS, evaluated=True),
    Tag("train_eval/accuracy", EVAL, "accuracy on a fixed training subset, inference mode",
        higher_is_better=_ACCURACY, evaluated=True, column="train_eval_acc", hparams_metric=True),
    Tag("gap/loss", EVAL, "generalization gap eval/loss - train_eval/loss", higher_is_better=_LOSS,
        evaluated=True, column="gap_loss", hparams_metric=True),
    Tag("gap/accuracy", EVAL, "generalization gap train_eval/accuracy - eval/accuracy",
        higher_is_better=_LOSS, evaluated=True, column="gap_acc", hparams_metric=True),
    # Once, at the end.
    Tag("test/loss", EVAL, "mean loss on the test split, at the end", higher_is_better=_LOSS,
        hparams_metric=True),
    Tag("test/accuracy", EVAL, "accuracy on the test split, at the end", higher_is_better=_ACCURACY,
        column="test_acc", hparams_metric=True),
    # Once, at the end, with early stopping: the best-validation weights (model_dir/best) on the test split.
    Tag("best/test/loss", EVAL, "test loss of the best-validation weights (early stopping), at their step",
        higher_is_better=_LOSS),
    Tag("best/test/accuracy", EVAL, "test accuracy of the best-validation weights (early stopping), at "
        "their step", higher_is_better=_ACCURACY, column="test_acc_at_best", hparams_metric=True),
    # The dashboards' configuration (TensorBoard's own tags).
    Tag("custom_scalars__config__", TRAIN, "the custom-scalars layout (trainer/metrics/dashboard.py), once",
        kind=LAYOUT),
    Tag("_hparams_/session_start_info", EACH, "the run's hyperparameters for the HParams dashboard",
        kind=HPARAMS),
    Tag("_hparams_/experiment", EVAL, "the HParams config: hyperparameters in order, declared metrics",
        kind=HPARAMS),
)


class UnknownTagError(KeyError):
  """A tag no entry of `TAGS` matches."""


def find(tag: str) -> Tag:
  """The registry entry of `tag` (exact names win over patterns); `UnknownTagError` if none."""
  for entry in TAGS:
    if entry.pattern == tag:
      return entry
  for entry in TAGS:
    if entry.matches(tag):
      return entry
  raise UnknownTagError(f"{tag!r} is not a registered tag (trainer/metrics/tags.py)")


def evaluated(*, classification: bool = True) -> tuple[str, ...]:
  """The scalars every validation evaluation writes (what early stopping can watch)."""
  return tuple(entry.pattern for entry in TAGS
               if entry.evaluated and (classification or not entry.pattern.endswith("accuracy")))


def console() -> tuple[str, ...]:
  """The scalars of the per-loop console line, in order."""
  return tuple(entry.pattern for entry in TAGS if entry.console)


def description(tag: str) -> str:
  """The registry's one-line doc of `tag` (TensorBoard shows it), "" for a tag it does not know."""
  try:
    return find(tag).doc
  except UnknownTagError:
    return ""


def hparams_metrics(*, classification: bool = True) -> tuple[Tag, ...]:
  """The tags the HParams dashboard declares as metrics (accuracies only for classification).

  Held-out results first (the evaluation directory's accuracies, then its losses), then the training
  side, otherwise in registry order: TensorBoard's HParams table shows only the first five metrics
  until more are ticked, and those should be the ones runs are compared by.
  """
  chosen = [entry for entry in TAGS if entry.hparams_metric
            and (classification or not entry.pattern.endswith("accuracy"))]
  return tuple(sorted(chosen, key=lambda entry: (entry.directory != EVAL,
                                                 not entry.pattern.endswith("accuracy"))))


def columns() -> dict[str, Tag]:
  """`occam-report`'s table columns: {column name: tag}, in registry order."""
  return {entry.column: entry for entry in TAGS if entry.column}
