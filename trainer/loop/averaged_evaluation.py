"""The eval action of a weight average: the run's evaluation on the averaged weights, as its own run.

After every validation evaluation of the raw weights, `EvaluateAverage` swaps the average into the
model (`AveragedWeights.swapped_in`: SWA recomputes BatchNorm statistics first), runs the same
evaluation (`eval/*`, and with the Monitor `train_eval/*` and `gap/*`), puts the raw weights back bit
for bit, and writes the result with the same tags into `model_dir/eval_<name>/`, a TensorBoard run
beside `eval/`. At the end, `finish` adds the average's `test/*` there, exports the averaged model
(`model_dir/<name>/saved_model`, chief only) and returns `<name>/eval/*` and `<name>/test/*` for the
run's results.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

from absl import logging

from trainer.metrics import tags
from trainer.metrics.summaries import SummaryWriters
from trainer.regularization.averaging import AveragedWeights
from trainer.runtime.export import export_saved_model

Evaluate = Callable[[Sequence[str]], dict[str, float]]


class EvaluateAverage:
  """Eval action: evaluates one weight average after each validation evaluation (see the module doc)."""

  def __init__(self, average: AveragedWeights, *, evaluate: Evaluate, writers: SummaryWriters,
               model_dir: str, feature_shape: Sequence[int], is_chief: bool):
    self._average, self._evaluate, self._writers = average, evaluate, writers
    self._model_dir, self._feature_shape, self._is_chief = model_dir, tuple(feature_shape), is_chief
    self.name = average.spec.name
    self.directory = tags.averaged_directory(self.name)
    self._last: dict[str, float] = {}
    self._last_step: int | None = None  # the step of `_last`: `finish` reuses it only at that step

  def __call__(self, step: int, scalars: Mapping[str, float]) -> None:
    del scalars  # the raw weights' evaluation; the average is evaluated anew
    if self._average.ready:
      self._last, self._last_step = self._evaluated(step, ["eval"]), step

  def finish(self, step: int) -> dict[str, float]:
    """At the end of a run: the average's `test/*` (and `eval/*` unless the last evaluation was at `step`),
    the export, and both as `<name>/<split>/<metric>`; {} when nothing was averaged yet (SWA whose
    first snapshot never came)."""
    if not self._average.ready:
      logging.warning("%s: no weights were averaged (the run ended before the first one); nothing to "
                      "evaluate or export", self.name)
      return {}
    fresh = self._last and self._last_step == step
    results = dict(self._last) if fresh else self._evaluated(step, ["eval"])
    results.update(self._evaluated(step, ["test"], export=self._is_chief))
    return {f"{self.name}/{tag}": value for tag, value in results.items()}

  def _evaluated(self, step: int, splits: Sequence[str], *, export: bool = False) -> dict[str, float]:
    with self._average.swapped_in():
      scalars = self._evaluate(splits)
      if export:
        path = os.path.join(self._model_dir, self.name, "saved_model")
        export_saved_model(self._average.model, path, self._feature_shape)
        logging.info("%s: exported the averaged weights to %s", self.name, path)
    self._writers.write_scalars(self.directory, step, scalars)
    return scalars
