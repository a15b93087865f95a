"""The console: quiet by default (Occam's lines only), `--verbosity=1` brings TensorFlow's back; the ETA."""

from __future__ import annotations

import pytest

from trainer.loop import controller

NOISE = ("absl::InitializeLog", "oneDNN", "cuda", "Sharding callback duration", "AutoGraph",
         "Assets written", "fingerprint")


@pytest.mark.slow  # the session's `cli_runs` (tests/cli_fixtures.py): two CLI runs
@pytest.mark.multiprocess
def test_quiet_by_default_and_verbosity_brings_tensorflow_back(cli_runs):
  quiet, verbose = cli_runs.first, cli_runs.second  # the default verbosity, then --verbosity=1
  assert "strategy.py" in quiet.splitlines()[0], quiet[:2000]  # Occam's first line comes first
  assert not [word for word in NOISE if word in quiet], quiet
  assert "final | results in" in quiet
  # The INFO lines TensorFlow's own Python files log on every machine when a SavedModel is exported (the
  # best model here): the quiet console drops them (LibraryInfoFilter), --verbosity=1 keeps them. Which
  # native start-up lines TensorFlow prints (oneDNN, CUDA stubs) depends on the CPU and the libraries.
  assert "Assets written to: " in verbose and "Assets written" not in quiet, verbose[-3000:]


def test_eta_ignores_the_first_loop_and_counts_wall_time_between_loops(monkeypatch):
  clock = iter([100.0, 130.0, 140.0])  # first loop ends (tracing included), then 10 s per 100 steps
  monkeypatch.setattr(controller.time, "monotonic", lambda: next(clock))
  eta = controller.Eta(train_steps=1000)
  assert eta.update(100) == "n/a"
  assert eta.update(200) == "240s"  # 30 s for 100 steps (training, eval, checkpoint): 800 more steps
  assert eta.update(300) == "140s"  # (140 - 100) s / 200 steps * 700 steps
