"""The two Optuna internals `occam-tune` relies on, fenced here and tested by tests/test_optuna_shim.py.

`occam-tune` asks and tells trials itself (so that `--trials` counts finished trials exactly and a
retried trial trains in its original's directory), and Optuna offers heartbeats, which detect trials
whose worker died, only inside `Study.optimize`. Optuna 4.x and 5.x have no public API for either need:

- a trial's storage id (`Trial._trial_id`), which the storage's methods take (`get_trial`, and the
  heartbeat); a `Trial` exposes only its number;
- the heartbeat thread `optimize` runs around each trial (`optuna.storages._heartbeat.
  get_heartbeat_thread(trial_id, storage)`, a context manager recording a heartbeat every
  `heartbeat_interval` seconds until it exits).

If an Optuna release renames or changes either, tests/test_optuna_shim.py fails naming it; fix this
module, nothing else.
"""

from __future__ import annotations

import contextlib


def trial_id(trial) -> int:
  """The storage id of `trial` (an `optuna.Trial`), which the storage's methods take."""
  return trial._trial_id


def frozen(trial):
  """`trial`'s current record in its storage (an `optuna.trial.FrozenTrial`: state, attrs, values)."""
  return trial.storage.get_trial(trial_id(trial))


def heartbeat(trial) -> contextlib.AbstractContextManager:
  """Records `trial`'s heartbeat every `heartbeat_interval` seconds of its storage while the block runs,
  as `Study.optimize` does around each trial (nothing if the storage has no heartbeat)."""
  from optuna.storages import _heartbeat
  return _heartbeat.get_heartbeat_thread(trial_id(trial), trial.storage)
