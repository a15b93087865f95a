"""Evaluate-only: a trained run's latest or best checkpoint on a split, read back without writing.

One real run (early stopping keeps best weights that differ from the last ones) is evaluated again;
its own results.json is the independent record the numbers must equal exactly: the same weights, the
same evaluation program, the same padded pass over the split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import trainer
from tests import helpers
from trainer import evaluation

BINDINGS = ["Trainer.train_steps=160", "Trainer.steps_per_loop=20", "Trainer.eval_every=20",
            "Trainer.checkpoint_every=80", "Trainer.early_stopping=@EarlyStopping()",
            "EarlyStopping.patience=3", "EarlyStopping.min_delta=1.0"]


def _files(model_dir: str) -> dict[str, tuple[int, float]]:
  return {os.path.join(root, name): (os.path.getsize(os.path.join(root, name)),
                                     os.path.getmtime(os.path.join(root, name)))
          for root, _, names in os.walk(model_dir) for name in names}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, dict]:
  model_dir = str(tmp_path_factory.mktemp("evaluation") / "run")
  helpers.train_in_process(model_dir, BINDINGS)
  with open(os.path.join(model_dir, "results.json")) as file:
    return model_dir, json.load(file)


def test_latest_and_best_checkpoints_give_the_runs_own_final_numbers(trained):
  model_dir, results = trained
  metrics, best = results["metrics"], results["early_stopping"]
  before = _files(model_dir)
  latest_test = trainer.evaluate(model_dir, checkpoint="latest", split="test")
  assert latest_test.step == results["step"] == 80  # stopped early at 20 + 3 * 20
  assert latest_test.checkpoint == os.path.join(model_dir, "checkpoints", "ckpt-80")
  assert latest_test.metrics == {"test/accuracy": metrics["test/accuracy"], "test/loss": metrics["test/loss"]}
  latest_eval = trainer.evaluate(model_dir, checkpoint="latest", split="eval")
  assert latest_eval.metrics == {"eval/accuracy": metrics["eval/accuracy"], "eval/loss": metrics["eval/loss"]}
  best_test = trainer.evaluate(model_dir, checkpoint="best", split="test")
  assert best_test.step == best["step"] == 20
  assert best_test.metrics == {f"test/{name}": value for name, value in best["test"].items()}
  assert best_test.metrics != latest_test.metrics  # the best weights are not the last ones
  assert _files(model_dir) == before  # nothing written, nothing touched


def test_bad_requests_name_the_culprit(trained, tmp_path):
  model_dir, _ = trained
  with pytest.raises(trainer.InvalidRunError, match=r"--split='train' is not one of \('eval', 'test'\)"):
    trainer.evaluate(model_dir, split="train")
  with pytest.raises(trainer.InvalidRunError, match=rf"--model_dir={tmp_path} holds no config.gin"):
    trainer.evaluate(str(tmp_path))
  without_best = str(tmp_path / "no_best")
  helpers.train_in_process(without_best, ["Trainer.train_steps=20", "Trainer.steps_per_loop=20",
                                          "Trainer.eval_every=20", "Trainer.checkpoint_every=20"])
  with pytest.raises(trainer.InvalidRunError,
                     match=r"no best checkpoint in .*no_best/best \(best checkpoints come from Trainer"):
    trainer.evaluate(without_best, checkpoint="best")


@pytest.mark.multiprocess
def test_the_command_line_prints_the_same_numbers_as_json(trained, tmp_path, capsys):
  """The command in a fresh process; its refusal of a bad request (exit status 2, the error on stderr) in
  this one, through the same `main`."""
  model_dir, results = trained
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=helpers.REPO)
  command = [sys.executable, "-m", "trainer.evaluation", f"--model_dir={model_dir}", "--checkpoint=best"]
  done = subprocess.run(command, cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=240)
  assert done.returncode == 0, done.stderr[-3000:]
  printed = json.loads(done.stdout)
  assert printed["step"] == 20
  best_test = results["early_stopping"]["test"]
  assert printed["metrics"] == {f"test/{name}": value for name, value in best_test.items()}
  capsys.readouterr()
  assert evaluation.main([f"--model_dir={tmp_path}"]) == 2
  assert f"occam-evaluate: error: --model_dir={tmp_path} holds no config.gin" in capsys.readouterr().err
  assert os.listdir(tmp_path) == []
