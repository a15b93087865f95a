"""`--mock_data`: a recipe end to end on TFDS's mock data in one command, before its data is prepared."""

from __future__ import annotations

import json
import os

import pytest

from tests import helpers
from trainer.data import mock


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_recipe_runs_end_to_end_on_mock_data_in_one_command(tmp_path):
  pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
  model_dir = str(tmp_path / "run")
  # The WRN recipe of CIFAR-100 with no tfds.data_dir bound, shrunk further by the user's own bindings
  # (which win over --mock_data's): a thin, shallow WRN, 3 steps instead of --mock_data's 2.
  process = helpers.run_cli(["--gin_file=gin_configs/cifar100/wrn28_10.gin", f"--model_dir={model_dir}",
                             "--mock_data", "--gin_bindings=WideResNet.depth=10",
                             "--gin_bindings=WideResNet.width=1", "--gin_bindings=Trainer.train_steps=3"],
                            timeout=600)
  assert process.returncode == 0, process.stdout[-3000:]
  assert "--mock_data: TFDS datasets are random mock data" in process.stdout
  with open(os.path.join(model_dir, "results.json")) as file:
    results = json.load(file)
  assert results["step"] == results["train_steps"] == 3
  assert 0 <= results["metrics"]["test/accuracy"] <= 1 and results["metrics"]["train/loss"] > 0
  with open(os.path.join(model_dir, "operative_config.gin")) as file:
    operative = file.read()
  for binding in mock.SHRINK:  # what --mock_data shrinks, unless the user bound it
    if not binding.startswith(("Trainer.train_steps", "Monitor.")):
      name, value = binding.split("=")
      assert f"{name} = {value}" in operative, binding
  assert "tfds.name = 'cifar100'" in operative and "WideResNet.width = 1" in operative
  scratch = [line for line in operative.splitlines() if line.startswith("tfds.data_dir = ")]
  assert len(scratch) == 1 and not os.path.exists(scratch[0].split("'")[1])  # removed after the run
