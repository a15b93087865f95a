"""Installs that would lose the accelerator silently are refused: Mirrored with no GPU and no split CPU."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from tests import helpers


@pytest.mark.multiprocess
@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is visible: Mirrored uses it")
def test_mirrored_without_a_gpu_is_refused_unless_the_cpu_is_split(tmp_path):
  model_dir = tmp_path / "run"
  process = helpers.run_cli(["--gin_file=gin_configs/quickstart.gin", f"--model_dir={model_dir}",
                             "--strategy=mirrored"])
  assert process.returncode == 2, process.stdout[-3000:]
  assert "--strategy=mirrored: TensorFlow sees no GPU" in process.stdout
  assert "--virtual_devices=N" in process.stdout and "'.[gpu]'" in process.stdout
  assert "Traceback" not in process.stdout and not os.path.exists(model_dir)  # nothing written
