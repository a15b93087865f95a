"""What a newcomer reads when something is off: suggestions, --help, data that is not there, a huge
value, and a console without other libraries' chatter."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from tests import helpers
from trainer import api
from trainer.common import messages
from trainer.config import catalog, parsing

RECIPE = "gin_configs/cifar10/resnet20.gin"  # reads TFDS's cifar10


def test_describe_suggests_the_closest_names_and_bindings_ignoring_case():
  with pytest.raises(catalog.UnknownConfigurableError, match=r"did you mean L2\.scale, .*L2\?$"):
    catalog.describe("L2scale")
  with pytest.raises(catalog.UnknownConfigurableError, match=r"did you mean L2\?$"):
    catalog.describe("l2")
  with pytest.raises(catalog.UnknownConfigurableError, match=r"did you mean WarmupCosine\?$"):
    catalog.describe("warmupcosin")
  assert catalog.describe("L2.scale") == catalog.describe("L2")  # a binding's left side: its owner


def test_an_unknown_parameter_or_configurable_in_a_binding_gets_a_suggestion():
  with pytest.raises(parsing.ConfigError, match=r"^--gin_bindings='L2.scal=1e-4': Configurable 'L2' doesn't "
                     r"have a parameter named 'scal'. \(did you mean scale\?\)\n"):
    parsing.parse([helpers.QUICKSTART], ["L2.scal=1e-4"])
  with pytest.raises(parsing.ConfigError, match=r"No configurable matching 'WarmupCosin'. \(did you mean "
                     r"WarmupCosine\?\)"):
    parsing.parse([helpers.QUICKSTART], ["WarmupCosin.warmup_steps=3"])


@pytest.mark.multiprocess
def test_help_exits_0_and_lists_occams_flags_and_verbosity():
  shown = helpers.run_cli(["--help"])
  assert shown.returncode == 0, shown.stdout[-2000:]
  for flag in ("--gin_file", "--model_dir", "--mock_data (--nomock_data)", "--describe", "-v,--verbosity",
               "--helpfull"):
    assert flag in shown.stdout, flag


def test_a_recipe_without_a_data_dir_says_how_to_prepare_and_bind_it(tmp_path, capsys):
  model_dir = tmp_path / "run"
  assert helpers.run_main([f"--gin_file={RECIPE}", f"--model_dir={model_dir}"]) == 2
  error = capsys.readouterr().err
  assert error.count("\n") == 1 and "missing 1 required" not in error, error
  advice = ("tfds build cifar10 --data_dir=DIR", "--gin_bindings=\"tfds.data_dir='DIR'\"", "--mock_data")
  assert all(part in error for part in advice), error
  assert not model_dir.exists()


@pytest.mark.multiprocess
def test_outside_the_repo_data_not_prepared_is_one_message_without_library_lines(tmp_path):
  """From another directory (the shipped configs found through the package): no gin `resource_reader`
  INFO line, no TFDS warning about the empty folders it probed, then the one `not prepared` line."""
  pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
  empty = tmp_path / "tfds"
  empty.mkdir()
  env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
  env["PYTHONPATH"] = helpers.REPO
  process = subprocess.run([sys.executable, "-m", "trainer.main", f"--gin_file={RECIPE}",
                            f"--model_dir={tmp_path / 'run'}", f"--gin_bindings=tfds.data_dir='{empty}'"],
                           cwd=str(tmp_path), env=env, timeout=300, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  assert process.returncode == 2, process.stdout[-3000:]
  lines = process.stdout.splitlines()
  # Occam's first line (the strategy), then the error.
  assert "strategy.py" in lines[0] and len(lines) == 2, process.stdout[-3000:]
  assert lines[1].startswith("occam: error: ") and "'cifar10' is not prepared under data_dir=" in lines[1]


def test_the_start_up_line_names_each_regularizer_once(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger="absl")
  helpers.train_in_process(str(tmp_path), ["Trainer.train_steps=1", "Trainer.steps_per_loop=1"])
  lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("regularizer ")]
  assert lines and lines[0].startswith("regularizer l2: L2(scale="), lines


HUGE = "x" * 100_000


def test_a_huge_value_is_shortened_wherever_an_error_echoes_it(tmp_path, capsys):
  for binding in (f"Trainer.train_steps='{HUGE}'", f"L2.scale={HUGE}"):
    assert helpers.run_main([f"--gin_file={helpers.QUICKSTART}", f"--model_dir={tmp_path / 'run'}",
                             f"--gin_bindings={binding}"]) == 2
    error = capsys.readouterr().err
    assert len(error) < 1000 and "[99,8" in error and " more characters]" in error, error[:2000]
  with pytest.raises(api.InvalidRunError) as raised:
    api.train([helpers.QUICKSTART], [f"Trainer.train_steps='{HUGE}'"], model_dir=str(tmp_path / "run"))
  assert len(str(raised.value)) < 1000 and "train_steps must be an integer" in str(raised.value)
  assert not (tmp_path / "run").exists()


def test_cap_keeps_short_words_and_both_ends_of_a_long_one():
  assert messages.cap("got 'abc' (fix Trainer.train_steps)") == "got 'abc' (fix Trainer.train_steps)"
  word = "a" * 150 + "b" * 150
  capped = messages.cap(f"bad {word} here")
  assert capped == f"bad {'a' * 120}...[140 more characters]...{'b' * 40} here"
