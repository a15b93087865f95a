"""TensorBoard laid out for the question a regularization run asks, without renaming a tag.

Two things are written once, at a run's first start:

* a **custom-scalars layout** (in `train/`): train and eval curves are in different event
  directories under different tags, so the scalar dashboard cannot overlay them; the layout's charts
  do (loss train vs train_eval vs eval vs test, accuracy likewise), one unit per chart, each chart's
  series named in its title.
* an **HParams config** (in `eval/`): the hyperparameters in a fixed order, regularization strengths
  first, and as metrics only the tags the registry marks `hparams_metric` (named once each, with the
  registry's doc), instead of the dashboard's default of every scalar tag (every `norms/<layer>/*`,
  `perf/*`).

The hyperparameters themselves are a session in each of `train/` and `eval/`, under one group name
(`SummaryWriters.write_hparams`), so the metrics are declared without a group (TensorBoard reads a
metric from `<session>/<group>`): each is found in the one directory that has its tag, whether the
logdir is model_dir itself or a parent of many runs.

Every tag a chart names is a registered tag (`trainer/metrics/tags.py`); tests read both back
through a real TensorBoard server.
"""

from __future__ import annotations

import re
from typing import Mapping

import tensorflow as tf
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from trainer.metrics import tags

# (category, [(what the chart shows, [tag or tag pattern, ...]), ...]); patterns are registry patterns.
# One unit and scale per chart (a norm of ~1,800 next to one of ~16 flattens the smaller; an accuracy
# gap next to a loss gap mixes units), each entry one series, or a family with one series per term
# or layer. The plugin tells a run's lines apart only by a marker explained under "Matches", so each
# chart's title names its series in order (`chart_title`).
LAYOUT: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("Generalization", (
        ("loss", ("train/data_loss", "train_eval/loss", "eval/loss", "test/loss")),
        ("accuracy", ("train/accuracy", "train_eval/accuracy", "eval/accuracy", "test/accuracy")),
        ("gap/loss = eval/loss - train_eval/loss", ("gap/loss",)),
        ("gap/accuracy = train_eval/accuracy - eval/accuracy", ("gap/accuracy",)),
    )),
    ("Regularization", (
        ("objective", ("train/loss", "train/data_loss")),
        ("penalties", ("penalty/total", "penalty/<term>", "penalty/model_losses")),
        ("L2 norms", ("norms/weights_l2", "norms/excluded_l2", "norms/distance_from_init")),
        ("L1 norm", ("norms/weights_l1",)),
        ("per-layer kernel L2 norms", ("norms/<layer>/kernel_l2",)),
        ("sparsity (fractions of the regularized weights)", ("sparsity/zero_fraction",
                                                             "sparsity/near_zero_fraction")),
        ("learning rate", ("optimizer/learning_rate",)),
        ("decoupled weight decay factor", ("optimizer/weight_decay",)),
    )),
)

# HParams shown first: what a regularization sweep varies.
_STRENGTHS = ("scale", "rate")


def tag_regex(pattern: str) -> str:
  """The anchored regex the custom-scalars plugin matches a registry pattern with (`<x>` is a component).

  A pattern's regex leaves out the tags registered under their own name (`penalty/<term>` does not
  match `penalty/total`), so each regex finds the tags `tags.find` gives that entry: one series each.

  >>> tag_regex("norms/<layer>/kernel_l2")
  '^norms/[^/]+/kernel_l2$'
  """
  parts = re.split(r"(<[a-z_]+>)", pattern)
  regex = "".join(("[^/]+" if part.startswith("<") else re.escape(part)) for part in parts)
  named = [entry.pattern for entry in tags.TAGS
           if entry.pattern != pattern and "<" not in entry.pattern and re.fullmatch(regex, entry.pattern)]
  if named:
    regex = f"(?!(?:{'|'.join(re.escape(tag) for tag in named)})$){regex}"
  return f"^{regex}$"


def chart_title(what: str, patterns: tuple[str, ...]) -> str:
  """A chart's title: what it shows, then its series in order unless it is one tag named in `what`.

  >>> chart_title("objective", ("train/loss", "train/data_loss"))
  'objective: train/loss, train/data_loss'
  """
  if len(patterns) == 1 and patterns[0] in what:
    return what
  return f"{what}: {', '.join(patterns)}"


def custom_scalars_layout() -> layout_pb2.Layout:
  """The `LAYOUT` as the custom-scalars plugin's proto (one multiline chart per entry, a regex per series)."""
  categories = []
  for title, charts in LAYOUT:
    categories.append(layout_pb2.Category(title=title, chart=[
        layout_pb2.Chart(title=chart_title(what, patterns), multiline=layout_pb2.MultilineChartContent(
            tag=[tag_regex(pattern) for pattern in patterns]))
        for what, patterns in charts]))
  return layout_pb2.Layout(category=categories)


def ordered_hparams(hparams: Mapping[str, object]) -> list[str]:
  """The hyperparameter names in dashboard order: strengths (`reg/<term>/scale|rate`), other `reg/*`,
  `regularizers`, then the rest as `hparams.collect` lists them."""
  def rank(name: str) -> int:
    if is_strength(name):
      return 0
    return 1 if name.startswith("reg/") else 2 if name == "regularizers" else 3
  return sorted(hparams, key=rank)  # stable: the collect order within a rank


def is_strength(name: str) -> bool:
  """Whether hyperparameter `name` is a regularization strength (`reg/<term>/scale` or `.../rate`)."""
  return name.startswith("reg/") and name.rsplit("/", 1)[1] in _STRENGTHS


def hparams_experiment(hparams: Mapping[str, object], *, classification: bool) -> api_pb2.Experiment:
  """The HParams experiment config: ordered hyperparameters, the registry's metrics (each once).

  Strengths are marked `differs`: TensorBoard (2.16+) lists the hyperparameters that differ first and
  sorts the rest by name, so this keeps the strengths first and visible whatever else a sweep varies.
  """
  infos = [api_pb2.HParamInfo(name=name, differs=is_strength(name),
                              description="regularization strength" if is_strength(name) else "")
           for name in ordered_hparams(hparams)]
  metrics = [hp.Metric(entry.pattern, display_name=entry.pattern, description=entry.doc).as_proto()
             for entry in tags.hparams_metrics(classification=classification)]
  return api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)


def write_layout() -> None:
  """Writes the custom-scalars layout under the current default summary writer (step 0)."""
  tf.summary.experimental.write_raw_pb(custom_scalar_summary.pb(custom_scalars_layout()).SerializeToString(),
                                       step=0)


def write_hparams_config(hparams: Mapping[str, object], *, classification: bool) -> None:
  """Writes the HParams experiment config under the current default summary writer (step 0)."""
  experiment = hparams_experiment(hparams, classification=classification)
  summary = summary_pb2.Summary()
  summary.value.add(tag=hparams_metadata.EXPERIMENT_TAG, tensor=hparams_metadata.NULL_TENSOR,
                    metadata=hparams_metadata.create_summary_metadata(
                        plugin_data_pb2.HParamsPluginData(experiment=experiment)))
  tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)
