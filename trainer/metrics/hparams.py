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

Values are read from the built objects (the schedule's base rate, the terms' validated strengths),
not from gin text, so they are the values the run actually used. The metrics are not listed here:
`trainer.metrics.dashboard` declares them (the tag registry's `hparams_metric` tags) in the HParams
config, with these keys in dashboard order.
"""

from __future__ import annotations

import gin

from trainer.runtime import compat

# Term attributes that are hyperparameters, reported as `reg/<term>/<attribute>` when present.
_TERM_SETTINGS = ("scale", "rate", "convention", "alpha", "mixup_alpha", "cutmix_alpha", "prob",
                  "switch_prob", "rho", "adaptive", "eta", "scaled", "perturbation")

HParamValue = bool | int | float | str


def collect(*, model, optimizer, schedule, settings, data_name: str, terms) -> dict[str, HParamValue]:
  """The hyperparameters of a built run: its model, optimizer, schedule, data, terms and settings.

  `settings` is the run's `Trainer` (batch size, train steps, seed); `schedule` the optimizer's
  schedule (possibly wrapped by `schedules.Scaled`, whose `schedule` is reported).
  """
  hparams: dict[str, HParamValue] = {
      "model": model.name,
      "optimizer": type(compat.inner_optimizer(optimizer)).__name__,
      "lr_schedule": type(getattr(schedule, "schedule", schedule)).__name__,
      "learning_rate": float(schedule.base_learning_rate),
      "batch_size": settings.batch_size,
      "train_steps": settings.train_steps,
      "seed": settings.seed,
      "data": data_name,
      "label_noise": label_noise(data_name),
      "loss": getattr(settings.loss, "__name__", type(settings.loss).__name__),
      "label_smoothing": loss_setting(settings.loss, "label_smoothing"),
      "regularizers": ",".join(term.name for term in terms) or "none",
  }
  for term in terms:
    hparams[f"reg/{term.name}/type"] = type(term).__name__
    for setting in _TERM_SETTINGS:
      value = getattr(term, setting, None)
      if value is not None:
        hparams[f"reg/{term.name}/{setting}"] = value
  return hparams


def loss_setting(loss_fn, setting: str) -> float:
  """`<loss>.<setting>` as bound in gin (e.g. `softmax_cross_entropy.label_smoothing`); 0.0 when unbound.

  The loss is a gin-configurable function, called with its bindings, so they are read where they were set.
  """
  try:
    return float(gin.get_bindings(getattr(loss_fn, "__name__", "")).get(setting, 0.0))
  except (ValueError, KeyError):  # not a registered configurable (a loss bound from Python)
    return 0.0


def label_noise(loader: str) -> float:
  """`<loader>.label_noise` as bound in gin (e.g. `digits.label_noise`); 0.0 when unbound.

  `Splits` records the noise only in its description, so the configured fraction is read where it
  was set. Both loaders with label noise (`digits`, `teacher_student`) default to 0.0; loaders
  without the argument (`tfrecord`, `tfds`) report 0.0.
  """
  try:
    return float(gin.get_bindings(loader).get("label_noise", 0.0))
  except (ValueError, KeyError):  # Not a registered configurable: a loader gin does not know.
    return 0.0
