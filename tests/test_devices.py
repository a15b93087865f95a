"""Device kinds and what they decide (XLA by default), the XLA benchmark's table, and the device check.

`Trainer.jit_compile='auto'` is resolved in one place (`trainer.runtime.devices`); on this CPU-only
machine it leaves XLA off, so the published CPU figures keep their kernels. The device check
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

from tests.helpers import REPO
from trainer.benchmarks import xla
from trainer.benchmarks.timing import Variant
from trainer.loop.settings import Trainer
from trainer.runtime import devices


def test_auto_leaves_xla_off_on_cpu_and_an_explicit_setting_is_taken_as_given():
  for strategy in (tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0")):
    assert devices.device_kind(strategy) == "CPU"
    assert devices.jit_compile("auto", strategy) is False
    assert devices.jit_compile(True, strategy) is True and devices.jit_compile(False, strategy) is False
  assert devices.describe_jit_compile("auto", tf.distribute.get_strategy()) == \
      "XLA: off (jit_compile='auto' on CPU)"


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_jit_compile_setting_other_than_auto_true_false_is_refused_naming_the_binding(value):
  with pytest.raises(ValueError, match=r"Trainer.jit_compile must be 'auto', True or False"):
    Trainer(model=lambda: None, data=lambda: None, optimizer=lambda: None, jit_compile=value)


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
