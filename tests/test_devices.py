"""Device kinds and the per-kind settings they decide (XLA, precision), the XLA benchmark's table, and the
device check.

`Trainer.jit_compile` and `Trainer.mixed_precision` are resolved by one resolver
(`trainer.runtime.devices`); on this CPU-only machine `jit_compile='auto'` leaves XLA off, so the
published CPU figures keep their kernels. The device check
(`scripts/device_check.py`) is meant for a GPU host or a TPU VM; here it runs in its tiny
configuration and the test asserts the table's structure, never its numbers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import QUICKSTART, REPO, run_main
from trainer import main
from trainer.benchmarks import xla
from trainer.benchmarks.timing import Variant
from trainer.loop.settings import Trainer
from trainer.runtime import devices

TINY = ["Trainer.train_steps=2", "Trainer.steps_per_loop=2", "Trainer.eval_every=2", "MLP.hidden_sizes=(8,)",
        "Monitor.train_eval_examples=8", "Monitor.sharpness_examples=8"]


def cpu_strategies() -> tuple[tf.distribute.Strategy, ...]:
  return tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0")


def test_auto_leaves_xla_off_on_cpu_and_an_explicit_setting_or_a_mapping_is_taken_as_given():
  for strategy in cpu_strategies():
    assert devices.device_kind(strategy) == "CPU"
    assert devices.resolve(devices.JIT_COMPILE, "auto", strategy) is False
    assert devices.resolve(devices.JIT_COMPILE, True, strategy) is True
    assert devices.resolve(devices.JIT_COMPILE, False, strategy) is False
    assert devices.resolve(devices.JIT_COMPILE, {"cpu": True}, strategy) is True
    assert devices.resolve(devices.JIT_COMPILE, {"tpu": False}, strategy) is False  # cpu left out: 'auto'
  default = tf.distribute.get_strategy()
  assert devices.describe_jit_compile("auto", default) == "XLA: off (jit_compile='auto' on CPU)"
  assert devices.describe_jit_compile(True, default) == "XLA: on (jit_compile=True)"
  assert devices.describe_jit_compile({"cpu": True}, default) == "XLA: on (jit_compile={'cpu': True} on CPU)"


def test_mixed_precision_per_kind_resolves_for_the_strategy_and_a_kind_left_out_is_float32():
  for strategy in cpu_strategies():
    assert devices.resolve(devices.MIXED_PRECISION, {"tpu": "mixed_bfloat16"}, strategy) is None
    assert devices.resolve(devices.MIXED_PRECISION, {"cpu": "mixed_bfloat16"}, strategy) == "mixed_bfloat16"
    assert devices.resolve(devices.MIXED_PRECISION, "mixed_float16", strategy) == "mixed_float16"
    assert devices.resolve(devices.MIXED_PRECISION, None, strategy) is None
  assert devices.describe_precision({"tpu": "mixed_bfloat16"}, tf.distribute.get_strategy()) == \
      "precision: float32 (mixed_precision={'tpu': 'mixed_bfloat16'} on CPU)"
  with pytest.raises(ValueError, match="must be 'auto', True, False, or a mapping"):
    devices.resolve(devices.JIT_COMPILE, 1, tf.distribute.get_strategy())  # 1 == True, but no bool


def test_a_run_takes_both_per_kind_settings_for_this_machines_kind_and_logs_the_decisions(tmp_path, caplog):
  """The ImageNet recipes' `{'tpu': 'mixed_bfloat16'}` means float32 here; keyed by this machine's kind,
  the policy is the run's. One resolver decides precision and XLA, and the run logs both decisions."""
  import trainer
  kind = devices.device_kind(tf.distribute.get_strategy()).lower()
  assert kind == ("gpu" if tf.config.list_logical_devices("GPU") else "cpu")
  caplog.set_level("INFO", logger="absl")  # absl's own logger: an earlier test may have quieted it
  try:
    for policy, compute_dtype in [({"tpu": "mixed_bfloat16"}, "float32"),
                                  ({kind: "mixed_bfloat16"}, "bfloat16")]:
      results = trainer.train([QUICKSTART], [*TINY, f"Trainer.mixed_precision={policy!r}",
                                             f"Trainer.jit_compile={{'tpu': False, {kind!r}: False}}"],
                              model_dir=str(tmp_path / compute_dtype), verbose=False)
      assert {layer.compute_dtype for layer in results.run.model.layers[1:-1]} == {compute_dtype}
      assert f"precision: {'mixed_bfloat16' if compute_dtype == 'bfloat16' else 'float32'} " \
             f"(mixed_precision={policy!r} on {kind.upper()})" in caplog.messages
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")  # a built run leaves its policy global
  assert f"XLA: off (jit_compile={{'tpu': False, {kind!r}: False}} on {kind.upper()})" in caplog.messages


BAD = [("jit_compile", "yes", "must be 'auto', True, False, or a mapping of device kinds (cpu, gpu, tpu) to "
                              "True, False"),
       ("jit_compile", 1, "must be 'auto', True, False"),
       ("jit_compile", None, "must be 'auto', True, False"),
       ("jit_compile", {"cpu": "auto"}, "'auto' for 'cpu' is not one of True, False"),
       ("mixed_precision", "bfloat16", "must be None, 'float32', 'mixed_bfloat16', 'mixed_float16', or a"),
       ("mixed_precision", "auto", "must be None, 'float32'"),
       ("mixed_precision", {"tpu_v4": "mixed_bfloat16"}, "the keys must be kinds of device (cpu, gpu, tpu), "
                                                         "got 'tpu_v4'"),
       ("mixed_precision", {"tpu": "bfloat16"}, "'bfloat16' for 'tpu' is not one of None, 'float32'"),
       ("mixed_precision", {}, "the keys must be kinds of device (cpu, gpu, tpu), got none")]


@pytest.mark.parametrize("name, value, message", BAD)
def test_a_bad_per_kind_setting_is_refused_naming_the_binding(name, value, message):
  with pytest.raises(ValueError) as error:
    Trainer(model=lambda: None, data=lambda: None, optimizer=lambda: None, **{name: value})
  assert str(error.value).startswith(f"Trainer.{name}={value!r}: {message}")


@pytest.mark.parametrize("name, value, message", [BAD[0], BAD[6]])
def test_the_cli_refuses_a_bad_per_kind_setting_with_exit_2_before_training(tmp_path, capsys, name, value,
                                                                           message):
  model_dir = tmp_path / "run"
  code = run_main([f"--gin_file={QUICKSTART}", f"--gin_bindings=Trainer.{name}={value!r}",
                   f"--model_dir={model_dir}"])
  assert code == main.EXIT_BAD_INPUT == 2
  assert f"Trainer.{name}={value!r}: {message}" in capsys.readouterr().err
  assert not any(file.startswith("events") for _, _, files in os.walk(model_dir) for file in files)


def _variant(label: str, seconds: float) -> Variant:
  return Variant(label, lambda: np.array([seconds, seconds]), work=10, seconds=[np.array([seconds, seconds])])


def test_the_xla_table_shows_each_variant_the_speed_up_and_the_best_occam_against_fit():
  workload = xla.Workload("ResNet-20", "", (), 10, lambda: None)
  lines = xla.table([(workload, [_variant("off", 2.0), _variant("on", 1.0), _variant("fit", 4.0)])])
  assert lines[1] == "ResNet-20 | 5.00 | 10.00 | 2.50 | 2.00x | 4.00x (jit on)"


ROW = re.compile(r"^(.+?) +\| (.+?) +\| (.+?) +\| (.+?) +\| (PASS|FAIL|verdict|)$")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_device_check_runs_every_section_and_prints_a_table_of_figures_and_expectations():
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "device_check.py"), "--tiny"],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
  assert result.returncode == 0, result.stdout[-3000:]
  lines = result.stdout.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("device check: "))
  assert "1 replicas on CPU" in lines[start]
  rows = [ROW.match(line) for line in lines[start + 1:] if line.strip() and " | " in line]
  assert all(rows), lines[start:]
  header, *body = [row.groups() for row in rows]
  assert header == ("section", "figure", "value", "should be", "verdict")
  sections = {row[0] for row in body}
  assert sections == {"full step (CutMix + SAM + L2 + decay, bf16)", "Monitor", "training", "input"}
  full = {row[1]: row for row in body if row[0].startswith("full step")}
  assert full["compiles and trains"][2] == "yes; XLA: off (jit_compile='auto' on CPU)"
  assert full["every loss, penalty and gradient finite"][2:] == ("yes", "yes", "PASS")
  assert all(row[3] for row in body)  # every figure says what it should be
