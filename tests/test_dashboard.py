"""The custom-scalars layout (trainer/metrics/dashboard.py): one unit per chart, every series named.

Read back from the proto the plugin is given; tests/test_tensorboard_server.py reads it through a real
server's `/layout` route.
"""

from __future__ import annotations

import re

from trainer.metrics import dashboard
from trainer.metrics import tags as tags_lib

# Tags of different units or scales (a norm of ~1,800 against one of ~16, an accuracy against a loss,
# a learning rate against a decay factor): never on one chart.
APART = (("norms/weights_l1", "norms/weights_l2"), ("gap/accuracy", "gap/loss"),
         ("optimizer/learning_rate", "optimizer/weight_decay"), ("train/loss", "norms/weights_l2"),
         ("train/accuracy", "train/loss"))


def _charts() -> dict[str, list[str]]:
  return {chart.title: list(chart.multiline.tag) for category in dashboard.custom_scalars_layout().category
          for chart in category.chart}


def test_tags_of_different_units_are_on_different_charts():
  charts = _charts()
  for first, second in APART:
    for regexes in charts.values():
      matched = {tag for tag in (first, second) if any(re.match(regex, tag) for regex in regexes)}
      assert matched != {first, second}, (first, second, regexes)


def test_each_regex_is_one_registered_series_and_the_title_names_it_in_order():
  for title, regexes in _charts().items():
    patterns = [pattern for _, charts in dashboard.LAYOUT for what, chart_patterns in charts
                if dashboard.chart_title(what, chart_patterns) == title for pattern in chart_patterns]
    assert regexes == [dashboard.tag_regex(pattern) for pattern in patterns]
    positions = [title.index(pattern) for pattern in patterns]
    assert positions == sorted(positions), title
    for pattern in patterns:
      concrete = pattern.replace("<term>", "l2").replace("<layer>", "dense_0")
      assert tags_lib.find(concrete).pattern == pattern  # a registered tag, not a family of several
      assert [regex for regex in regexes if re.match(regex, concrete)][0] == dashboard.tag_regex(pattern)


def test_generalization_charts_overlay_train_and_held_out_curves():
  charts = _charts()
  assert charts["loss: train/data_loss, train_eval/loss, eval/loss, test/loss"] == [
      "^train/data_loss$", "^train_eval/loss$", "^eval/loss$", "^test/loss$"]
  assert charts["gap/accuracy = train_eval/accuracy - eval/accuracy"] == ["^gap/accuracy$"]
