"""Cluster faults: bounded waits with real `trainer.main` worker processes on localhost, TF_CONFIG.

A worker that never comes up ends the others with exit status 2 after `--cluster_timeout`; a worker that
dies mid-run ends the survivor with exit status 75 and a rerun of all workers resumes (docs/RELIABILITY.md);
a TF_CONFIG naming a port already in use is refused naming it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import QUICKSTART, REPO, run_main_captured, short_run_args
from tests.test_distribution import _free_port
from trainer import main


def _start_worker(addresses: list[str], index: int, args: list[str]) -> subprocess.Popen:
  """One `trainer.main --strategy=multi_worker_mirrored` process as task `worker index` of `addresses`."""
  tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
  env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen([sys.executable, "-m", "trainer.main", "--strategy=multi_worker_mirrored", *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_an_unreachable_worker_ends_the_wait_with_exit_2_naming_it(tmp_path):
  model_dir = tmp_path / "run"
  absent = f"localhost:{_free_port()}"  # nothing listens there
  worker = _start_worker([f"localhost:{_free_port()}", absent], 0,
                         [f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}", "--cluster_timeout=3"])
  # A hang bound, not a measurement (start-up time depends on the machine's load): the wait itself
  # ended at Occam's 3 s deadline, which the message below states.
  output, _ = worker.communicate(timeout=300)
  assert worker.returncode == 2, output[-3000:]
  assert f"waiting for workers {absent} (up to 3 s; --cluster_timeout)" in output
  assert f"occam: error: multi_worker_mirrored: no answer from {absent} within 3 s" in output
  assert "Traceback" not in output
  assert not model_dir.exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_lost_worker_ends_the_survivor_with_exit_75_and_a_rerun_resumes(tmp_path):
  model_dir = tmp_path / "run"
  addresses = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
  args = [f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}", "--cluster_timeout=60",
          "--gin_bindings=Trainer.train_steps=200", "--gin_bindings=Trainer.steps_per_loop=20",
          "--gin_bindings=Trainer.checkpoint_every=20", "--gin_bindings=Trainer.eval_every=200"]
  chief, other = (_start_worker(addresses, index, args) for index in range(2))
  checkpoints = model_dir / "checkpoints"
  deadline = time.monotonic() + 300  # a hang bound: two workers start and train on a shared machine
  while not (checkpoints.is_dir() and any(n.endswith(".index") for n in os.listdir(checkpoints))):
    assert time.monotonic() < deadline and chief.poll() is None, "no checkpoint was written"
    time.sleep(0.2)
  other.send_signal(signal.SIGKILL)
  other.wait()
  output, _ = chief.communicate(timeout=300)  # a hang bound (TensorFlow notices the loss in ~10 s)
  assert chief.returncode == 75, output[-3000:]
  assert "occam: error: worker lost: another worker of the cluster stopped answering" in output
  assert "rerun all workers with the same command to resume" in output
  assert "Traceback" not in output
  last = output.rsplit("the last checkpoint is ", 1)[1].split(";")[0]
  assert last.startswith("ckpt-")

  rerun = [_start_worker(addresses, index, args) for index in range(2)]
  outputs = [worker.communicate(timeout=240)[0] for worker in rerun]
  for worker, output in zip(rerun, outputs):
    assert worker.returncode == 0, output[-3000:]
  assert "resumed from " in outputs[0] and "ckpt-" in outputs[0]
  assert (model_dir / "checkpoints" / "ckpt-200.index").exists()


def test_tf_config_port_in_use_is_named(tmp_path, capsys, caplog, monkeypatch):
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
    server.bind(("", 0))
    server.listen()
    port = server.getsockname()[1]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": [f"localhost:{port}"]},
                                                "task": {"type": "worker", "index": 0}}))
    args = short_run_args(tmp_path / "run") + ["--strategy=multi_worker_mirrored"]
    code, output = run_main_captured(args, capsys, caplog)
  assert code == main.EXIT_BAD_INPUT
  assert f"TF_CONFIG task worker 0: port {port} of localhost:{port} is already in use" in output
  assert not (tmp_path / "run").exists()
