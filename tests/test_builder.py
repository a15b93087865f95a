"""The Run boundary: `build` reads the settings and changes nothing in them; the run gets a frozen record."""

from __future__ import annotations

import dataclasses
import os

import pytest
import tensorflow as tf

from tests.helpers import FAST, QUICKSTART
from trainer.config import parsing
from trainer.loop import builder
from trainer.loop.early_stopping import EarlyStoppingState
from trainer.loop.settings import Trainer


def test_build_changes_nothing_in_the_settings_and_the_run_holds_plain_values(tmp_path):
  parsing.parse([QUICKSTART], FAST + ["Trainer.regularizers=[@L2(), @Mixup(), @SAM()]", "Mixup.alpha=0.2",
                                      "SAM.rho=0.05", "Trainer.early_stopping=@EarlyStopping()",
                                      "Trainer.monitor=@Monitor()"])
  settings = Trainer()
  specs = [settings, settings.monitor, settings.early_stopping, *settings.regularizers]
  before = [dict(vars(spec)) for spec in specs]
  run = builder.build(settings, strategy=tf.distribute.get_strategy(), model_dir=str(tmp_path / "run"))
  assert [dict(vars(spec)) for spec in specs] == before  # no term bound, no Monitor attached, no state
  assert not hasattr(settings.early_stopping, "best_step")
  assert isinstance(run.early_stopping, EarlyStoppingState)
  assert [len(term.selected) for term in run.terms] == [3, 0, 6]  # L2: kernels; SAM: kernels and biases
  assert all(bound is not spec for bound, spec in zip(run.terms, settings.regularizers))
  assert run.roles.batch_transform is run.terms[1] and run.roles.gradient_estimator is run.terms[2]
  assert not hasattr(run, "settings") and run.config == settings.config()
  with pytest.raises(dataclasses.FrozenInstanceError):
    run.config.train_steps = 1  # type: ignore[misc]
  assert not os.path.exists(tmp_path / "run")  # building writes nothing
