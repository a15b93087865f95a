"""The Optuna internals fenced in `trainer.experiments.optuna_shim` still do what `occam-tune` needs.

If one of these fails after an Optuna upgrade, the internal it names changed: fix optuna_shim.py.
Runs a real SQLite study with a 1 s heartbeat (grace period 2 s).
"""

from __future__ import annotations

import time

import optuna
import pytest

from trainer.experiments import optuna_shim


@pytest.fixture
def storage(tmp_path):
  return optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/shim.db", heartbeat_interval=1, grace_period=2)


@pytest.fixture
def study(storage):
  return optuna.create_study(storage=storage, study_name="shim")


def test_trial_id_is_the_storage_id_of_the_trial(study, storage):
  study.ask()
  trial = study.ask()
  expected = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("shim"), 1)
  assert optuna_shim.trial_id(trial) == expected, "Trial._trial_id changed"
  assert optuna_shim.frozen(trial).number == 1 and optuna_shim.frozen(trial).state.name == "RUNNING"


def test_the_heartbeat_keeps_a_trial_alive_and_its_absence_fails_it(study):
  trial = study.ask()
  with optuna_shim.heartbeat(trial):
    time.sleep(3.5)  # past the grace period: alive only because the heartbeat ran
    optuna.storages.fail_stale_trials(study)
    assert optuna_shim.frozen(trial).state.name == "RUNNING", "optuna.storages._heartbeat stopped beating"
  time.sleep(3)
  optuna.storages.fail_stale_trials(study)
  assert optuna_shim.frozen(trial).state.name == "FAIL", "the heartbeat did not stop with its block"
