"""Two writers: the model_dir lease refuses a second run and judges a holder on this host by its process.

A live holder (a real training process) refuses a second run naming it; a SIGKILLed one blocks nothing,
and the late events it logged past its last checkpoint are purged on resume. A lease that cannot be
written is not left behind.

A real process holds the lease: alive with an old heartbeat, or frozen by SIGSTOP, it keeps it; killed and
left unreaped (a zombie) it loses it at once. A pid reused by another process, told apart by its start
time, does not keep a dead holder's lease; a lease from another host still goes stale by its heartbeat.
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
from tensorboard.backend.event_processing import plugin_event_accumulator

from tests.helpers import REPO, run_main_captured, short_run_args
from trainer import main
from trainer.runtime import lock

HOLD = ("import sys, time; from trainer.runtime import lock; lock.acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(600)")


def _age_heartbeat(path, seconds: float) -> dict:
  """Rewrites the lease's heartbeat `seconds` into the past, as a holder stalled that long would leave it."""
  record = json.loads(path.read_text())
  record["heartbeat"] -= seconds
  path.write_text(json.dumps(record))
  return record


def _state(pid: int) -> str:
  with open(f"/proc/{pid}/stat") as stat:
    return stat.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.multiprocess
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="exact liveness reads /proc (Linux)")
def test_a_live_holder_keeps_its_lease_and_a_zombie_loses_it(tmp_path, caplog):
  path = tmp_path / lock.LOCK_FILE
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"))
  try:
    assert holder.stdout.readline().strip() == "held"
    _age_heartbeat(path, 10 * lock.STALE_SECONDS)  # alive but silent: a stall under load
    with pytest.raises(lock.LockedError, match=rf"in use by another run \(pid {holder.pid} on host"):
      lock.acquire(str(tmp_path))
    holder.send_signal(signal.SIGSTOP)  # frozen: still alive
    deadline = time.monotonic() + 30
    while _state(holder.pid) != "T":
      assert time.monotonic() < deadline
      time.sleep(0.01)
    with pytest.raises(lock.LockedError, match=f"pid {holder.pid}"):
      lock.acquire(str(tmp_path))
    holder.send_signal(signal.SIGKILL)  # not waited for: a zombie until reaped
    while _state(holder.pid) != "Z":
      assert time.monotonic() < deadline
      time.sleep(0.01)
    with caplog.at_level("WARNING"):
      lease = lock.acquire(str(tmp_path))
    assert f"pid {holder.pid} is not running on this host (it exited" in caplog.text
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lease.release()
    assert not path.exists()
  finally:
    holder.kill()
    holder.wait()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the start time comes from /proc (Linux)")
def test_a_reused_pid_does_not_keep_a_dead_holders_lease(tmp_path, caplog):
  other = subprocess.Popen(["sleep", "60"])  # a live process with the holder's pid but another start time
  try:
    start = lock._process_start(other.pid)
    assert start and start.isdigit()
    record = {"pid": other.pid, "host": socket.gethostname(), "since": 0, "heartbeat": time.time()}
    path = tmp_path / lock.LOCK_FILE
    path.write_text(json.dumps(dict(record, process_start=start)))
    with pytest.raises(lock.LockedError, match=f"pid {other.pid}"):
      lock.acquire(str(tmp_path))
    path.write_text(json.dumps(dict(record, process_start=str(int(start) - 1))))
    with caplog.at_level("WARNING"):
      lock.acquire(str(tmp_path)).release()
    assert "the pid now belongs to another process" in caplog.text
  finally:
    other.kill()
    other.wait()


def test_a_lease_from_another_host_goes_stale_by_its_heartbeat(tmp_path):
  path = tmp_path / lock.LOCK_FILE
  record = {"pid": os.getpid(), "host": f"not-{socket.gethostname()}", "since": 0, "heartbeat": time.time()}
  path.write_text(json.dumps(record))
  with pytest.raises(lock.LockedError, match="on host not-"):
    lock.acquire(str(tmp_path))
  _age_heartbeat(path, lock.STALE_SECONDS + 1)
  lock.acquire(str(tmp_path)).release()


def test_lease_refuses_a_live_holder_and_replaces_a_dead_one(tmp_path):
  with lock.acquire(str(tmp_path)):
    with pytest.raises(lock.LockedError, match=rf"pid {os.getpid()} on host {socket.gethostname()}, since"):
      lock.acquire(str(tmp_path))
  assert not (tmp_path / lock.LOCK_FILE).exists()
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                        text=True, check=True)
  now = time.time()
  for holder in ({"pid": int(dead.stdout), "host": socket.gethostname(), "since": now, "heartbeat": now},
                 {"pid": 1, "host": "elsewhere", "since": 0, "heartbeat": now - lock.STALE_SECONDS - 1}):
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps(holder))
    lock.acquire(str(tmp_path)).release()
  (tmp_path / lock.LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "heartbeat": now}))
  with pytest.raises(lock.LockedError, match="pid 1 on host elsewhere"):
    lock.acquire(str(tmp_path))


def test_a_lease_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
  def full_disk(descriptor, mode):
    os.close(descriptor)
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(lock.os, "fdopen", full_disk)
  with pytest.raises(OSError, match="No space left"):
    lock.acquire(str(tmp_path))
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
@pytest.mark.multiprocess
def test_second_run_is_refused_a_killed_run_does_not_block_and_its_late_events_are_purged(
    tmp_path, capsys, caplog):
  """A real training process holds the lease: a second run is refused naming it. SIGKILLed after logging
  steps past its last checkpoint, it blocks nothing; the resumed run's history has one value per step."""
  model_dir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  late = ["Trainer.checkpoint_every=30"]  # logs every 10 steps, checkpoints every 30
  first = subprocess.Popen([sys.executable, "-m", "trainer.main", *short_run_args(model_dir, 100000, late)],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    for line in first.stdout:
      if "train | step: 50/" in line:
        break
    code, output = run_main_captured(short_run_args(model_dir, steps=60, extra=late), capsys, caplog)
    assert code == main.EXIT_BAD_INPUT
    assert f"is in use by another run (pid {first.pid} on host {socket.gethostname()}, since" in output
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  killed_at = max(int(n[5:-6]) for n in os.listdir(model_dir / "checkpoints") if n.endswith(".index"))
  resumed = short_run_args(model_dir, steps=killed_at + 30, extra=late)
  code, output = run_main_captured(resumed, capsys, caplog)
  assert code == 0, output
  assert "replacing the stale lease" in output and f"pid {first.pid} is not running" in output
  assert not (model_dir / lock.LOCK_FILE).exists()
  accumulator = plugin_event_accumulator.EventAccumulator(str(model_dir / "train"))  # the server's reader
  accumulator.Reload()
  for tag in accumulator.Tags()["tensors"]:
    steps = [event.step for event in accumulator.Tensors(tag)]
    assert steps == sorted(set(steps)), (tag, steps)  # one value per step
  assert [event.step for event in accumulator.Tensors("train/loss")] == list(range(10, killed_at + 31, 10))
