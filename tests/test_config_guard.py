"""Resume safety (the config guard): which changes a resumed run may make, the diff it shows for the others,
and that a stored config.gin is read as data, never executed."""

from __future__ import annotations

import os
import sys

from tests import helpers
from tests.helpers import QUICKSTART
from trainer import main
from trainer.config import guard

TINY = ["--gin_bindings=Trainer.train_steps=4", "--gin_bindings=Trainer.steps_per_loop=2",
        "--gin_bindings=MLP.hidden_sizes=(8,)"]


def run_main(args, capsys) -> tuple[int, str]:
  """Runs the CLI's `run` in this process; returns its exit code and what it printed to stderr."""
  code = helpers.run_main(args)
  return code, capsys.readouterr().err


BASE = "Trainer.train_steps = 100\nTrainer.eval_every = 10\nL2.scale = 0.001\nMLP.hidden_sizes = (8, 8)\n"


def test_config_guard_allows_safe_changes_and_refuses_others_with_a_diff():
  safe = (BASE.replace("100", "300").replace("eval_every = 10", "eval_every = 20")
          + "Monitor.sharpness_every = 5\n")
  assert guard.unsafe_changes(BASE, safe) == []
  changed = BASE.replace("0.001", "0.01").replace("(8, 8)", "(8, 16)")
  assert guard.unsafe_changes(BASE, changed) == [
      "- L2.scale = 0.001", "+ L2.scale = 0.01",
      "- MLP.hidden_sizes = (8, 8)", "+ MLP.hidden_sizes = (8, 16)"]
  assert guard.unsafe_changes(BASE, BASE + "L1.scale = 0.1\n") == ["+ L1.scale = 0.1"]


def test_config_guard_ignores_formatting():
  assert guard.unsafe_changes(BASE, "# comment\n" + BASE.replace(" = ", "=")) == []


def test_resuming_with_a_changed_model_is_refused_with_a_config_diff(tmp_path, capsys):
  model_dir = tmp_path / "run"
  code, err = run_main([f"--gin_file={QUICKSTART}", *TINY, f"--model_dir={model_dir}"], capsys)
  assert code == 0, err
  before = {p: os.path.getmtime(p) for p in _files(model_dir)}
  changed = [f"--gin_file={QUICKSTART}", *TINY, "--gin_bindings=MLP.hidden_sizes=(16,)",
             "--gin_bindings=Trainer.train_steps=8", f"--model_dir={model_dir}"]
  code, err = run_main(changed, capsys)
  assert code == main.EXIT_BAD_INPUT
  assert "was started with a different configuration" in err
  assert "- MLP.hidden_sizes = (8,)" in err and "+ MLP.hidden_sizes = (16,)" in err
  assert "Trainer.train_steps" not in err.split("Changed bindings:")[1].split("Safe to change")[0]
  # Forced past the config guard, the checkpoint itself still refuses to load into another model.
  code, err = run_main(changed + ["--allow_config_change"], capsys)
  assert code == main.EXIT_BAD_INPUT
  assert "ckpt-4 does not fit this run's model/optimizer" in err and "fresh --model_dir" in err
  assert {p: os.path.getmtime(p) for p in _files(model_dir)} == before


def test_safe_config_changes_resume(tmp_path, capsys):
  model_dir = tmp_path / "run"
  assert run_main([f"--gin_file={QUICKSTART}", *TINY, f"--model_dir={model_dir}"], capsys)[0] == 0
  code, err = run_main([f"--gin_file={QUICKSTART}", *TINY, "--gin_bindings=Trainer.train_steps=6",
                        "--gin_bindings=Trainer.eval_every=3", f"--model_dir={model_dir}"], capsys)
  assert code == 0, err


def _files(directory) -> list[str]:
  return sorted(os.path.join(root, name) for root, _, names in os.walk(directory) for name in names)


def test_the_config_guard_parses_config_gin_as_data_without_importing(tmp_path):
  """A stored config.gin is never executed: its imports are not imported, its references not called."""
  marker = tmp_path / "imported"
  module = tmp_path / "occam_faults_side_effect.py"
  module.write_text(f"open({str(marker)!r}, 'w').close()\n")
  sys.path.insert(0, str(tmp_path))
  try:
    text = "import occam_faults_side_effect\nfrom __gin__ import dynamic_registration\nTrainer.seed = 3\n"
    assert guard.bindings(text) == {"Trainer.seed": "3"}
  finally:
    sys.path.remove(str(tmp_path))
  assert not marker.exists()
