"""Bad configuration: every bad gin file, binding, flag or setting stops before training with one message
that names the culprit (exit 2), no traceback, and writes nothing."""

from __future__ import annotations

import os

import pytest

from tests import helpers
from tests.helpers import QUICKSTART, run_main_captured
from trainer import main

TINY = ["--gin_bindings=Trainer.train_steps=4", "--gin_bindings=Trainer.steps_per_loop=2",
        "--gin_bindings=MLP.hidden_sizes=(8,)"]


def run_main(args, capsys) -> tuple[int, str]:
  """Runs the CLI's `run` in this process; returns its exit code and what it printed to stderr."""
  code = helpers.run_main(args)
  return code, capsys.readouterr().err


@pytest.mark.parametrize("binding, expected", [
    ("Nope.x = 1", "No configurable matching 'Nope'"),
    ("Trainer.nope = 1", "doesn't have a parameter named 'nope'"),
    ("Trainer.train_steps = (", "malformed gin"),
    ("Trainer.model = @NoSuchModel", "No configurable matching reference '@NoSuchModel'"),
])
def test_bad_binding_is_named_and_nothing_is_written(tmp_path, capsys, binding, expected):
  model_dir = tmp_path / "run"
  code, err = run_main([f"--gin_file={QUICKSTART}", f"--gin_bindings={binding}", f"--model_dir={model_dir}"],
                       capsys)
  assert code == main.EXIT_BAD_INPUT
  assert f"--gin_bindings={binding!r}" in err and expected in err
  assert not model_dir.exists()


def test_missing_gin_file(tmp_path, capsys):
  code, err = run_main(["--gin_file=nowhere/missing.gin", f"--model_dir={tmp_path / 'run'}"], capsys)
  assert code == main.EXIT_BAD_INPUT and "--gin_file=nowhere/missing.gin: file not found" in err


def test_error_in_a_gin_file_names_file_and_line(tmp_path, capsys):
  config = tmp_path / "broken.gin"
  config.write_text(f"include '{QUICKSTART}'\nTrainer.batch_size = 32\nTrainer.bogus = 1\n")
  code, err = run_main([f"--gin_file={config}", f"--model_dir={tmp_path / 'run'}"], capsys)
  assert code == main.EXIT_BAD_INPUT
  assert str(config) in err and "line 3" in err and "bogus" in err


def test_model_bound_with_parentheses_is_explained(tmp_path, capsys):
  code, err = run_main([f"--gin_file={QUICKSTART}", "--gin_bindings=Trainer.model = @MLP()",
                        f"--model_dir={tmp_path / 'run'}"], capsys)
  assert code == main.EXIT_BAD_INPUT
  assert "Trainer.model must be a factory" in err and "without parentheses" in err
  assert "`Trainer.model = @MLP`" in err  # the factory the user bound, not the Sequential it built


def test_an_optimizers_own_weight_decay_is_refused_for_the_selector(tmp_path, capsys):
  code, err = run_main([f"--gin_file={QUICKSTART}", "--gin_bindings=Trainer.optimizer=@SGD",
                        "--gin_bindings=SGD.weight_decay=0.01", f"--model_dir={tmp_path / 'run'}"], capsys)
  assert code == main.EXIT_BAD_INPUT
  assert "Trainer.optimizer SGD has its own weight_decay=0.01" in err and "@DecoupledWeightDecay()" in err


@pytest.mark.parametrize("bindings, expected", [
    (["Trainer.batch_size=1024", "Trainer.eval_batch_size=1024", "digits.num_train=500"],
     "Trainer.batch_size=1024 exceeds the 500 training examples of digits"),
    (["MLP.num_outputs=5"], "Trainer.model mlp has 5 outputs but digits has 10 classes"),
    (["Trainer.early_stopping=@EarlyStopping()", "EarlyStopping.metric='eval/acc'"],
     "EarlyStopping.metric='eval/acc' is not an evaluated metric"),
])
def test_inconsistent_settings_are_refused_before_training(tmp_path, capsys, bindings, expected):
  model_dir = tmp_path / "run"
  code, err = run_main([f"--gin_file={QUICKSTART}", *[f"--gin_bindings={b}" for b in bindings],
                        f"--model_dir={model_dir}"], capsys)
  assert code == main.EXIT_BAD_INPUT and expected in err
  assert not any(name.startswith("events") for _, _, names in os.walk(model_dir) for name in names)


def test_unwritable_model_dir(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  code, err = run_main([f"--gin_file={QUICKSTART}", f"--model_dir={blocker / 'run'}"], capsys)
  assert code == main.EXIT_BAD_INPUT and f"--model_dir={blocker / 'run'} is not a writable directory" in err


def test_unknown_strategy_lists_the_valid_ones(tmp_path, capsys):
  code, err = run_main([f"--gin_file={QUICKSTART}", "--strategy=bogus", f"--model_dir={tmp_path / 'run'}"],
                       capsys)
  assert code == main.EXIT_BAD_INPUT and "--strategy='bogus'" in err and "mirrored" in err


def test_indivisible_batch_is_refused(tmp_path, capsys):
  code, err = run_main([f"--gin_file={QUICKSTART}", "--gin_bindings=Trainer.batch_size=0",
                        f"--model_dir={tmp_path / 'run'}"], capsys)
  assert code == main.EXIT_BAD_INPUT
  assert "Trainer: batch_size must be an integer >= 1" in err


@pytest.mark.parametrize("gin_files, bindings, expected", [
    (["EMPTY"], [], "no gin file or binding sets Trainer.model, Trainer.data, Trainer.optimizer"),
    ([], [], "no gin file or binding sets Trainer.model"),
    ([QUICKSTART], ["Trainer.batch_size='abc'"], "Trainer: batch_size must be an integer >= 1"),
    ([QUICKSTART], ["Trainer.seed=1e23"], "Trainer: seed must be an integer >= 0 and <= 4294967295"),
    ([QUICKSTART], ["Trainer.train_steps=3e9"], "train_steps must be an integer >= 1 and <= 2147483647"),
    ([QUICKSTART], ["Trainer.steps_per_loop=4294967296"], "Trainer: steps_per_loop must be an integer"),
    ([QUICKSTART], ["MLP.hidden_sizes=(-3,)"], "Trainer.model=@MLP failed: ValueError"),
    ([QUICKSTART], ["MLP.activation='nope'"], "Trainer.model=@MLP failed: ValueError"),
    ([QUICKSTART], ["digits.label_noise=-1.0"], "Trainer.data=@digits failed"),
    ([QUICKSTART], ["Trainer.data=@tfrecord", "tfrecord.train_files='/nowhere/*.tfrecord'",
                    "tfrecord.validation_files='/nowhere/v'", "tfrecord.test_files='/nowhere/t'",
                    "tfrecord.feature_shape=(64,)", "tfrecord.num_classes=10"],
     "Trainer.data=@tfrecord failed: FileNotFoundError: train_files: no files match '/nowhere/*.tfrecord'"),
    ([QUICKSTART], ["Trainer.loss=@mean_squared_error"], "loss=@mean_squared_error does not fit digits"),
])
def test_startup_error_is_named_and_leaves_no_trace(tmp_path, capsys, caplog, gin_files, bindings, expected):
  empty = tmp_path / "empty.gin"
  empty.write_text("")
  model_dir = tmp_path / "never" / "run"
  args = ([f"--gin_file={empty if f == 'EMPTY' else f}" for f in gin_files] + [f"--model_dir={model_dir}"]
          + [f"--gin_bindings={b}" for b in bindings])
  code, output = run_main_captured(args, capsys, caplog)
  assert code == main.EXIT_BAD_INPUT and expected in output
  assert not (tmp_path / "never").exists()


@pytest.mark.multiprocess
@pytest.mark.parametrize("args, expected", [
    (["--model_dir=/tmp/x", "--bogus=1"], "Unknown command line flag 'bogus'"),
    ([f"--gin_file={QUICKSTART}"], "--model_dir is required"),
])
def test_flag_errors_exit_2(args, expected):
  process = helpers.run_cli(args)  # the default hang bound: a loaded machine imports TensorFlow slowly
  assert process.returncode == main.EXIT_BAD_INPUT, process.stdout
  assert expected in process.stdout and "Traceback" not in process.stdout
