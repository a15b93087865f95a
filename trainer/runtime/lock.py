"""One writer per model_dir: a lease file that a crashed run does not leave stuck.

Two runs writing one model_dir would mix their event files and delete each other's checkpoints. The
chief takes `model_dir/.occam.lock` before writing anything but the directory itself: a JSON lease
with its pid, host, start time and a heartbeat that a background thread renews every
`HEARTBEAT_SECONDS`. A second run finds the lease and is refused (`LockedError`, naming the holder),
unless the lease is stale. On the holder's host liveness is exact, whatever the heartbeat says: a live
process (running, or stopped by SIGSTOP or a debugger) keeps its lease, and one that exited (a SIGKILLed
run, also while it is an unreaped zombie, or a pid now reused by another process, told apart by the
process's start time in `/proc`) loses it. From another host only the heartbeat is visible: a lease
whose heartbeat is older than `STALE_SECONDS` is stale (a run killed there, or a remote filesystem;
a run frozen that long on another host loses its lease too). Workers other than the
chief of a multi-worker run share the directory legitimately and take no lease. The lease goes
through `tf.io.gfile`, so it works for remote directories too (there creation is check-then-write,
not atomic; locally `O_EXCL` makes it atomic).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time

import tensorflow as tf
from absl import logging

from trainer.common import files

LOCK_FILE = ".occam.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0  # ten missed heartbeats


class LockedError(ValueError):
  """Another live run holds model_dir's lease; the message names it (pid, host, since)."""


class Lease:
  """A held lease: `release()` (or leaving the `with` block) stops the heartbeat and removes it."""

  def __init__(self, path: str, record: dict):
    self.path, self._record = path, record
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, name="occam-lease-heartbeat", daemon=True)
    self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        files.write_text(self.path, json.dumps(dict(self._record, heartbeat=time.time())))
      except (OSError, tf.errors.OpError) as error:  # a full disk must not kill the run
        logging.warning("could not renew the lease %s: %s", self.path, error)

  def release(self) -> None:
    """Stops the heartbeat and removes the lease if it is still this run's."""
    self._stop.set()
    self._thread.join()
    if _read(self.path).get("token") == self._record["token"]:
      tf.io.gfile.remove(self.path)

  def __enter__(self) -> Lease:
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def acquire(model_dir: str) -> Lease:
  """Takes model_dir's lease (replacing a stale one) or raises `LockedError` naming the live holder."""
  path = os.path.join(model_dir, LOCK_FILE)
  now = time.time()
  pid, host = os.getpid(), socket.gethostname()
  record = {"pid": pid, "host": host, "since": now, "heartbeat": now, "process_start": _process_start(pid),
            "token": f"{host}:{pid}:{now}"}
  for _ in range(2):  # at most one stale lease to replace
    if _create(path, json.dumps(record)):
      return Lease(path, record)
    holder = _read(path)
    stale = _stale_reason(holder, path)
    if stale is None:
      raise LockedError(
          f"--model_dir={model_dir} is in use by another run (pid {holder.get('pid', '?')} on host "
          f"{holder.get('host', '?')}, since {_when(holder.get('since'))}, last heartbeat "
          f"{_when(holder.get('heartbeat'))}): two runs writing one directory would mix their checkpoints "
          f"and event files. Wait for it, stop it, or use another --model_dir. The lease ({path}) is "
          f"released when its process exits (seen from another host: {STALE_SECONDS:.0f} s after its last "
          "heartbeat).")
    logging.warning("replacing the stale lease %s (%s)", path, stale)
    tf.io.gfile.remove(path)
  raise LockedError(f"--model_dir={model_dir}: another run took the lease ({path}) at the same moment")


def _create(path: str, text: str) -> bool:
  """Writes `path` if it does not exist; False if it does (atomic for local files)."""
  if "://" not in path:
    try:
      descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    try:
      with os.fdopen(descriptor, "w") as file:
        file.write(text)
    except BaseException:  # a full disk: an empty lease would block the directory until it goes stale
      os.remove(path)
      raise
    return True
  if tf.io.gfile.exists(path):
    return False
  files.write_text(path, text)
  return True


def _read(path: str) -> dict:
  """The lease's record; {} if it is gone, being written or unreadable."""
  try:
    with tf.io.gfile.GFile(path) as file:
      record = json.loads(file.read())
    return record if isinstance(record, dict) else {}
  except (tf.errors.OpError, ValueError):
    return {}


def _stale_reason(holder: dict, path: str) -> str | None:
  """Why the lease `holder` no longer protects a run, or None if it may (a live or unknown holder)."""
  pid = holder.get("pid")
  if holder.get("host") == socket.gethostname() and isinstance(pid, int):
    return _exited(pid, holder.get("process_start"))  # exact here: the heartbeat's age does not matter
  heartbeat = holder.get("heartbeat")
  if not isinstance(heartbeat, (int, float)):  # unreadable: judge by the file's age
    try:
      heartbeat = tf.io.gfile.stat(path).mtime_nsec / 1e9
    except tf.errors.OpError:
      return "the lease disappeared"
  age = time.time() - heartbeat
  return f"no heartbeat for {age:.0f} s" if age > STALE_SECONDS else None


def _exited(pid: int, process_start: str | None) -> str | None:
  """Why process `pid` of this host no longer holds a lease (it exited), or None while it lives.

  `process_start` (the holder's start time, recorded in leases since it was added) tells a reused pid
  from the holder. A zombie has exited: only its exit status waits for its parent.
  """
  state = _process_state(pid)
  if state is None:
    return f"pid {pid} is not running on this host"
  letter, start = state
  if letter == "Z":
    return f"pid {pid} is not running on this host (it exited; its parent has not reaped it yet)"
  if process_start and start and start != process_start:
    return f"pid {pid} is not running on this host (the pid now belongs to another process)"
  return None


def _process_state(pid: int) -> tuple[str, str | None] | None:
  """(state letter, start time) of process `pid` on this host, or None if there is none.

  From `/proc/PID/stat` (Linux): the state (R, S, D, T stopped, Z zombie, ...) and the start time in
  clock ticks since boot. Without `/proc`, `kill(pid, 0)` tells only whether the pid exists: ("?", None).
  """
  try:
    with open(f"/proc/{pid}/stat") as stat:
      fields = stat.read().rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return fields[0], fields[19]
  except FileNotFoundError:
    return None
  except (OSError, IndexError):
    pass
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return None
  except PermissionError:  # someone else's process
    pass
  return "?", None


def _process_start(pid: int) -> str | None:
  """The start time of process `pid` (see `_process_state`), None where `/proc` does not tell it."""
  state = _process_state(pid)
  return state[1] if state else None


def _when(timestamp) -> str:
  if not isinstance(timestamp, (int, float)):
    return "?"
  return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
