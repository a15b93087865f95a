"""The hyperparameters a run reports to TensorBoard's HParams dashboard, under stable keys.

Keys (public interface, documented in docs/METRICS.md):

  model, optimizer, lr_schedule, learning_rate, batch_size, train_steps, seed, data, label_noise,
  loss, label_smoothing, regularizers (comma-separated term names, "none" without terms), and per
  term `reg/<term>/type` plus each of its settings that exists: `reg/<term>/scale` (L2, L1,
  ProximalL1), `reg/<term>/rate` and `reg/<term>/convention` (DecoupledWeightDecay),
  `reg/<term>/alpha` and `reg/<term>/prob` (Mixup, CutMix), `reg/<term>/mixup_alpha`,
  `reg/<term>/cutmix_alpha`, `reg/<term>/prob` and `reg/<term>/switch_prob` (MixupCutMix),
  `reg/<term>/rho`, `reg/<term>/adaptive`, `reg/<term>/eta` and `reg/<term>/scaled` (ASAM only) and
  `reg/<term>/perturbation` (SAM).

Values come from the built objects, which declare them: the schedule's base rate, the data's label
noise (`Splits.label_noise`), the loss's settings (`trainer.loop.losses.hparams`) and each term's
`hparams()` (`trainer.regularization.terms`); so they are the values the run actually used, and a
new term reports its settings without a change here. The metrics are not listed here:
`trainer.metrics.dashboard` declares them (the tag registry's `hparams_metric` tags) in the HParams
config, with these keys in dashboard order.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from trainer.runtime import compat

HParamValue = bool | int | float | str


def collect(*, model, optimizer, schedule, batch_size: int, train_steps: int, seed: int, data_name: str,
            label_noise: float, loss: Mapping[str, HParamValue], terms: Sequence) -> dict[str, HParamValue]:
  """The hyperparameters of a built run: its model, optimizer, schedule, data, loss, terms and settings.

  `schedule` is the optimizer's schedule (possibly wrapped by `schedules.Scaled`, whose `schedule` is
  reported); `loss` the loss's entries (`loss`, `label_smoothing`); `terms` the regularization terms
  in the order the config lists them, each reporting `reg/<name>/<key>` from its `hparams()`.
  """
  hparams: dict[str, HParamValue] = {
      "model": model.name,
      "optimizer": type(compat.inner_optimizer(optimizer)).__name__,
      "lr_schedule": type(getattr(schedule, "schedule", schedule)).__name__,
      "learning_rate": float(schedule.base_learning_rate),
      "batch_size": batch_size,
      "train_steps": train_steps,
      "seed": seed,
      "data": data_name,
      "label_noise": float(label_noise),
      **loss,
      "regularizers": ",".join(term.name for term in terms) or "none",
  }
  for term in terms:
    hparams.update({f"reg/{term.name}/{key}": value for key, value in term.hparams().items()})
  return hparams
