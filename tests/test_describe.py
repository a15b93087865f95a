"""`--list_configurables` and `--describe NAME`: generated from gin's registry, no --model_dir needed."""

from __future__ import annotations

import pytest

from tests import helpers
from trainer.config import catalog, registry


def test_list_configurables_names_occam_and_keras_configurables(capsys):
  assert helpers.run_main(["--list_configurables"]) == 0
  listing = capsys.readouterr().out
  for name in ["Trainer", "WarmupCosine", "OneCycle", "L2", "ProximalL1", "MLP", "digits", "EarlyStopping",
               "Adam", "KerasL2", *registry.KERAS_SCHEDULES]:
    assert f"  {name} " in listing, name
  assert "trainer.loop.schedules:" in listing and "macro" not in listing  # gin's internals left out
  assert "WarmupCosine" in listing.split("trainer.loop.schedules:")[1].split("\n\n")[0]


def test_describe_shows_signature_defaults_and_docstring(capsys):
  assert helpers.run_main(["--describe=WarmupCosine"]) == 0
  text = capsys.readouterr().out
  assert text.startswith("trainer.loop.schedules.WarmupCosine\n")
  assert "    decay_steps: int | None = None," in text and "    warmup_steps: int = 0," in text
  assert "defaults to None: the run's length" in text  # the docstring
  trainer_text = catalog.describe("Trainer")
  assert "    model: Callable = REQUIRED," in trainer_text
  assert "    loss: Callable = @softmax_cross_entropy," in trainer_text
  assert "Safe to change on resume: train_steps" in trainer_text
  assert "    values," in catalog.describe("PiecewiseConstantDecay")  # a Keras one, by its short name


def test_an_unknown_name_is_bad_input_with_a_suggestion(capsys):
  assert helpers.run_main(["--describe=WarmupCosin"]) == 2
  assert "did you mean WarmupCosine?" in capsys.readouterr().err
  with pytest.raises(catalog.UnknownConfigurableError, match="see --list_configurables"):
    catalog.describe("NoSuchThing")


@pytest.mark.multiprocess
def test_the_cli_describes_without_a_model_dir():
  """(Training still requires one: tests/test_faults_config.py, test_flag_errors_exit_2.)"""
  described = helpers.run_cli(["--describe=L2"])
  assert described.returncode == 0 and "L2(" in described.stdout, described.stdout[-2000:]
