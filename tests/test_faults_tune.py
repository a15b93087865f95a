"""`occam-tune` when things go wrong: a worker killed or frozen mid-trial, a storage that cannot be opened.

The worker tests run the real command with two workers (this test holds the study's ask lock until both
have joined, so each takes one trial) and signal the spawned one once its trial has checkpointed: a
SIGKILL, or a SIGSTOP held until the study has failed its trial as stale, then a SIGCONT. The study
ends with exactly `--trials` finished trials, the lost trial retried in its own directory from its
checkpoint, and the same command again finds the study done (exit 0). Storage errors exit 2 with one
line naming the storage, its password masked; a server that never answers is given up on in bounded time.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import optuna
import pytest

from tests.helpers import MAIN_LANE_ONLY, REPO
from trainer.experiments import study_storage, sweep, trial_runner, tune
from trainer.runtime import lock

pytestmark = MAIN_LANE_ONLY

QUICKSTART = "gin_configs/quickstart.gin"
# Two trials of 600 steps, a checkpoint every 50 and an evaluation every 100 (a report to the study).
SHORT = ["Trainer.train_steps=600", "Trainer.steps_per_loop=50", "Trainer.eval_every=100",
         "Trainer.checkpoint_every=50", "WarmupCosine.warmup_steps=10", "MLP.hidden_sizes=(16,)"]


def _args(study_dir: str, *extra: str) -> list[str]:
  return ([f"--gin_file={QUICKSTART}", f"--study_dir={study_dir}", "--heartbeat=1", "--trials=2", "--space",
           "L2.scale=loguniform(1e-6, 1e-1)"] + [f"--gin_bindings={b}" for b in SHORT] + list(extra))


def _trials(study_dir: str) -> list[optuna.trial.FrozenTrial]:
  return optuna.load_study(study_name="study", storage=study_storage.default_storage(study_dir)).get_trials()


def _wait(condition, what: str, seconds: float = 600):  # a hang bound: a loaded machine starts workers slowly
  deadline = time.monotonic() + seconds
  while not (found := condition()):
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.05)
  return found


def _spawned_worker_with_a_checkpoint(study_dir: str, command_pid: int) -> tuple[int, int] | None:
  """(pid, trial number) of the spawned worker once its trial has a checkpoint, read from the lease."""
  for name in sorted(os.listdir(study_dir)):
    try:
      with open(os.path.join(study_dir, name, lock.LOCK_FILE)) as file:
        pid = json.load(file)["pid"]
      checkpoints = os.listdir(os.path.join(study_dir, name, "checkpoints"))
    except (OSError, ValueError, KeyError):
      continue
    if pid != command_pid and any(n.endswith(".index") for n in checkpoints):
      return pid, int(name.removeprefix("trial-"))
  return None


def _start_with_one_trial_per_worker(study_dir: str, log_path: str) -> tuple[subprocess.Popen, int, int]:
  """Starts `occam-tune --parallel=2`; returns it, its spawned worker's pid and that worker's trial."""
  os.makedirs(study_dir)
  log = open(log_path, "w")
  with open(os.path.join(study_dir, trial_runner.LOCK_FILE), "a") as ask_lock:
    fcntl.flock(ask_lock, fcntl.LOCK_EX)  # no worker asks for a trial before both have joined
    command = subprocess.Popen([sys.executable, "-m", "trainer.experiments.tune", *_args(study_dir),
                                "--parallel=2"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    log.close()
    _wait(lambda: open(log_path).read().count(": joined study") == 2 or command.poll() is not None,
          "both workers to join")
    assert command.poll() is None, open(log_path).read()[-3000:]
  pid, number = _wait(lambda: _spawned_worker_with_a_checkpoint(study_dir, command.pid),
                      "the spawned worker's first checkpoint")
  return command, pid, number


def _check_the_study_and_rerun(study_dir: str, lost: int, capsys) -> None:
  """Exactly 2 finished trials, `lost` failed once and retried from its checkpoint; a rerun is a no-op
  (run in this process: a finished study starts no worker)."""
  trials = _trials(study_dir)
  assert [t.state.name for t in trials].count("COMPLETE") == 2, [t.state.name for t in trials]
  assert [t.number for t in trials if t.state.name == "FAIL"] == [lost]
  retry = trials[-1]
  assert retry.state.name == "COMPLETE" and retry.system_attrs["failed_trial"] == lost
  assert retry.user_attrs["model_dir"] == trial_runner.trial_dir(study_dir, lost)
  with open(os.path.join(retry.user_attrs["model_dir"], sweep.DONE_FILE)) as file:
    done = json.load(file)
  assert done["step"] == 600 and "/checkpoints/ckpt-" in done["restored_from"]  # resumed, not restarted
  capsys.readouterr()
  assert tune.main([*_args(study_dir), "--parallel=2"]) == 0
  err = capsys.readouterr().err
  assert "the study has its 2 finished trials" in err, err[-3000:]
  assert len(_trials(study_dir)) == len(trials)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_killed_worker_is_reaped_and_its_trial_resumes_in_the_other(tmp_path, capsys):
  study_dir, log_path = str(tmp_path / "study"), str(tmp_path / "tune.log")
  command, pid, number = _start_with_one_trial_per_worker(study_dir, log_path)
  os.kill(pid, signal.SIGKILL)
  code = command.wait(timeout=600)
  output = open(log_path).read()
  assert code == trial_runner.EXIT_WORKER_FAILED, output[-3000:]  # a worker died: said, not hidden
  assert f"occam-tune-1 (pid {pid}) was killed by SIGKILL" in output
  assert "in use by another run" not in output and "Traceback" not in output, output[-3000:]
  _check_the_study_and_rerun(study_dir, number, capsys)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_frozen_worker_that_thaws_gives_its_stale_trial_to_the_retry(tmp_path, capsys):
  study_dir, log_path = str(tmp_path / "study"), str(tmp_path / "tune.log")
  command, pid, number = _start_with_one_trial_per_worker(study_dir, log_path)
  os.kill(pid, signal.SIGSTOP)
  try:  # frozen past two heartbeats: the other worker fails the trial and waits on its lease to retry it
    _wait(lambda: len(_trials(study_dir)) == 3 and _trials(study_dir)[number].state.name == "FAIL",
          "the frozen trial to be failed and retried")
    _wait(lambda: "waits for its model dir" in open(log_path).read(), "the retry to wait for the lease")
  finally:
    os.kill(pid, signal.SIGCONT)
  code = command.wait(timeout=600)
  output = open(log_path).read()
  assert code == 0, output[-3000:]
  assert f"trial {number} was failed as stale" in output and "Traceback" not in output, output[-3000:]
  _check_the_study_and_rerun(study_dir, number, capsys)


def test_a_damaged_sqlite_study_exits_2_naming_it(tmp_path, capsys):
  study_dir = tmp_path / "study"
  study_dir.mkdir()
  (study_dir / study_storage.DB_FILE).write_bytes(b"not a database " * 100)
  assert tune.main(_args(str(study_dir))) == sweep.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  assert f"--storage=sqlite:///{study_dir}/{study_storage.DB_FILE}: cannot open the study's storage" in err


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def test_an_unreachable_postgresql_server_exits_2_with_its_password_masked(tmp_path, capsys):
  pytest.importorskip("psycopg2", reason="psycopg2-binary (the test extra) is not installed")
  url = f"postgresql+psycopg2://occam:s3cret@127.0.0.1:{_free_port()}/occam"  # nothing listens there
  assert tune.main(_args(str(tmp_path / "study"), f"--storage={url}")) == sweep.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "s3cret" not in err and "Traceback" not in err, err
  assert f"--storage={url.replace('s3cret', '***')}: cannot open the study's storage" in err
  assert not (tmp_path / "study").exists()  # nothing written


def test_a_server_that_never_answers_does_not_hang_the_command(tmp_path, capsys):
  pytest.importorskip("psycopg2", reason="psycopg2-binary (the test extra) is not installed")
  silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never says a word
  held = []
  accepting = threading.Thread(target=lambda: held.append(silent.accept()), daemon=True)
  accepting.start()
  url = f"postgresql+psycopg2://occam@127.0.0.1:{silent.getsockname()[1]}/occam"
  try:
    started = time.monotonic()
    assert tune.main(_args(str(tmp_path / "study"), f"--storage={url}")) == sweep.EXIT_BAD_INPUT
    seconds = time.monotonic() - started
  finally:
    silent.close()
    for connection, _ in held:
      connection.close()
  err = capsys.readouterr().err
  assert held, "the command never connected"
  assert seconds < study_storage.CONNECT_TIMEOUT_SECONDS + 60, seconds  # a hang bound (validation included)
  assert f"--storage={url}: cannot open the study's storage" in err and "timeout" in err.lower(), err
