"""The model_dir lease judges a holder on this host by its process, not by its heartbeat.

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

from tests.helpers import REPO
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
