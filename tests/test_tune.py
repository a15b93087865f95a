"""`occam-tune` end to end: space errors, a tiny study, pruning, parallel workers, a kill, PostgreSQL.

Studies run on the quickstart shrunk to a few hundred steps of a 16-unit MLP. In-process tests call
`tune.main` or `trial_runner.work` (this process is then the long-lived worker); the multiprocess ones run
`python -m trainer.experiments.tune` as `occam-tune` would, and check the study in its storage.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import optuna
import pytest

from tests.helpers import MAIN_LANE_ONLY, REPO, checkpoint_values
from tests.sweep_fixtures import run_module
from trainer.experiments import plots, report, search_space, study_storage, sweep, trial_runner, tune

pytestmark = MAIN_LANE_ONLY

QUICKSTART = "gin_configs/quickstart.gin"
TINY = ["Trainer.train_steps=100", "Trainer.steps_per_loop=50", "Trainer.eval_every=50",
        "Trainer.checkpoint_every=50", "WarmupCosine.warmup_steps=10", "MLP.hidden_sizes=(16,)"]
SPACE = ["--space", "L2.scale=loguniform(1e-6, 1e-1)"]


def tune_args(study_dir, *extra: str, bindings=TINY) -> list[str]:
  return ([f"--gin_file={QUICKSTART}", f"--study_dir={study_dir}", "--heartbeat=1"]
          + [f"--gin_bindings={b}" for b in bindings] + list(extra))


def states(study_dir: str) -> list[str]:
  """The state names of the trials of the study in `study_dir`'s default storage, in number order."""
  storage = f"sqlite:///{os.path.join(study_dir, study_storage.DB_FILE)}"
  study = optuna.load_study(study_name=os.path.basename(study_dir), storage=storage)
  return [trial.state.name for trial in study.get_trials()]


def done(point_dir: str) -> dict:
  with open(os.path.join(point_dir, sweep.DONE_FILE)) as file:
    return json.load(file)


@pytest.mark.parametrize("entry, message", [
    ("L2.scal=uniform(0, 1)", "--space L2.scal: gin does not accept"),
    ("L2.scale=uniform(1, 1)", "the range is empty"),
    ("L2.scale=loguniform(0, 1e-2)", "a log range needs positive bounds"),
    ("L2.scale=normal(0, 1)", "expected KEY=KIND(...)"),
    ("Trainer.train_steps=int(1.5, 9)", "int needs two integers"),
    ("MLP.hidden_sizes=choice((16,), (16,))", "choice needs distinct values")])
def test_bad_space_exits_2_naming_the_culprit_before_any_trial(tmp_path, capsys, entry, message):
  study_dir = tmp_path / "study"
  assert tune.main(tune_args(study_dir, "--space", entry)) == sweep.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert message in err and entry.split("=")[0] in err, err
  assert not study_dir.exists()


def test_space_grammar_and_file(tmp_path):
  space_file = tmp_path / "space.txt"
  space_file.write_text("# the strength\nL2.scale=loguniform(1e-6, 1e-1)\n\n"
                        "MLP.hidden_sizes=choice((8,), (16, 16))  # widths\n")
  space = search_space.parse_space(["Trainer.train_steps=int(50, 100)"], str(space_file))
  assert [(d.key, d.kind) for d in space] == [("Trainer.train_steps", "int"), ("L2.scale", "loguniform"),
                                              ("MLP.hidden_sizes", "choice")]
  assert space[2].choices == ("(8,)", "(16, 16)")
  assert space[1].grid(3) == pytest.approx([1e-6, 10 ** -3.5, 1e-1])
  with pytest.raises(search_space.SpaceError, match="more than once"):
    search_space.parse_space(["L2.scale=uniform(0, 1)", "L2.scale=uniform(0, 2)"])
  assert study_storage.direction("eval/accuracy") == "maximize"
  assert study_storage.direction("eval/loss") == "minimize"


@pytest.mark.slow
def test_tiny_study_completes_and_reads_like_a_sweep(tmp_path):
  study_dir = str(tmp_path / "study")
  # The grid sampler: 3 log-spaced strengths; --trials is capped at the grid's size.
  assert tune.main(tune_args(study_dir, *SPACE, "--trials=5", "--sampler=grid", "--grid_size=3")) == 0
  assert states(study_dir) == ["COMPLETE"] * 3
  runs = report.load_sweep(study_dir)  # occam-report's reader: the same run-directory layout
  assert [run.name for run in runs] == ["trial-0000", "trial-0001", "trial-0002"]
  assert sorted(float(run.bindings["L2.scale"]) for run in runs) == pytest.approx([1e-6, 10 ** -3.5, 1e-1])
  for run in runs:
    point_dir = os.path.join(study_dir, run.name)
    assert done(point_dir)["step"] == 100
    assert run.values["eval_acc"] == pytest.approx(done(point_dir)["value"], rel=1e-6)  # float32 events
    for directory in ("train", "eval"):  # each an HParams session (trainer/metrics/summaries.py)
      assert any(name.startswith("events.") for name in os.listdir(os.path.join(point_dir, directory)))
  built = report.build([study_dir], str(tmp_path / "report"))
  assert built.x_label == "L2.scale" and len(built.runs) == 3
  assert {"vs_strength.png", "study_history.png", "study_slice.png"} <= set(built.files)
  assert {"history", "slice"} <= {name for name in plots.STUDY_VIEWS
                                  if os.path.exists(os.path.join(study_dir, f"{name}.png"))}


def test_pruning_stops_a_hopeless_trial_early_with_a_checkpoint(tmp_path):
  study_dir = str(tmp_path / "study")
  hopeless = TINY[:1] + ["Trainer.train_steps=400"] + TINY[1:]
  assert tune.main(tune_args(study_dir, "--space", "WarmupCosine.base_learning_rate=choice(1e-9)",
                             "--pruner=threshold:0.5", "--trials=1", bindings=hopeless)) == 0
  assert states(study_dir) == ["PRUNED"]
  point_dir = os.path.join(study_dir, "trial-0000")
  assert done(point_dir)["state"] == "PRUNED" and done(point_dir)["step"] == 50
  assert "ckpt-50.index" in os.listdir(os.path.join(point_dir, "checkpoints"))  # written at the stop


@pytest.mark.slow
def test_a_trial_is_bit_identical_first_or_after_another_in_the_same_worker(tmp_path):
  """Runs X alone, then Y and X in one study: X's evaluations and checkpoint match exactly."""
  space = (search_space.Dimension("L2.scale", "choice", choices=("1e-3", "1e-1")),)
  results = {}
  for name, order in (("alone", ["1e-3"]), ("after", ["1e-1", "1e-3"])):
    spec = study_storage.Spec((QUICKSTART,), tuple(TINY), space, "eval/accuracy", "maximize",
                              str(tmp_path / name), f"sqlite:///{tmp_path}/{name}.db", name,
                              trials=len(order), heartbeat=1)
    os.makedirs(spec.study_dir)
    study = study_storage.load_study(spec)
    for value in order:
      study.enqueue_trial({"L2.scale": value})
    assert trial_runner.work(spec) == 0
    results[name] = os.path.join(spec.study_dir, f"trial-{len(order) - 1:04d}")
  alone, after = results["alone"], results["after"]
  assert report.read_run(alone)["eval/eval/accuracy"] == report.read_run(after)["eval/eval/accuracy"]
  assert done(alone)["value"] == done(after)["value"]
  expected, actual = checkpoint_values(alone), checkpoint_values(after)
  assert expected.keys() == actual.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(actual[key], value, err_msg=key)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_killed_trial_is_retried_once_and_two_workers_finish_the_study(tmp_path):
  """A worker SIGKILLed once its trial checkpointed; the rerun has 2 local workers on the SQLite study.

  The rerun fails the stale trial, retries it in its own model dir (resuming from its checkpoint) and
  ends with exactly `--trials` complete trials: none lost, none run twice.
  """
  study_dir = str(tmp_path / "study")
  long_run = ["Trainer.train_steps=3000", "Trainer.steps_per_loop=50", "Trainer.eval_every=1500",
              "Trainer.checkpoint_every=100", "WarmupCosine.warmup_steps=10", "MLP.hidden_sizes=(16,)"]
  args = tune_args(study_dir, *SPACE, "--trials=3", bindings=long_run)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  first = subprocess.Popen([sys.executable, "-m", "trainer.experiments.tune", *args], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = os.path.join(study_dir, "trial-0000", "checkpoints")
  deadline = time.monotonic() + 120
  while not (os.path.isdir(checkpoints) and any(f.endswith(".index") for f in os.listdir(checkpoints))):
    assert first.poll() is None and time.monotonic() < deadline, "the first trial never checkpointed"
    time.sleep(0.05)
  first.send_signal(signal.SIGKILL)  # with --parallel=1, the command is the worker
  first.wait()
  assert states(study_dir) == ["RUNNING"]
  result = run_module("tune", [*args, "--parallel=2"])
  assert result.returncode == 0, result.stdout[-4000:]
  study = optuna.load_study(study_name="study", storage=f"sqlite:///{study_dir}/{study_storage.DB_FILE}")
  trials = study.get_trials()
  complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
  failed = [t.number for t in trials if t.state == optuna.trial.TrialState.FAIL]
  assert len(complete) == 3 and len(failed) + 3 == len(trials), [t.state.name for t in trials]
  retries = {t.system_attrs["failed_trial"]: t for t in complete if "failed_trial" in t.system_attrs}
  assert sorted(retries) == failed == [0]  # the killed trial, retried once
  for original, retry in retries.items():
    assert retry.user_attrs["model_dir"] == trial_runner.trial_dir(study_dir, original)
  model_dirs = [t.user_attrs["model_dir"] for t in complete]
  assert len(set(model_dirs)) == 3 and all(done(d)["step"] == 3000 for d in model_dirs)
  assert len({tuple(t.params.items()) for t in complete}) == 3
  assert "ckpt-" in done(trial_runner.trial_dir(study_dir, 0))["restored_from"]  # resumed, not restarted
  # Both workers joined the one study (which of them runs which trial is a race: on a quiet machine
  # the first may finish all three before the second has imported TensorFlow).
  assert "tune: worker 0: joined study" in result.stdout and "tune: worker 1: joined study" in result.stdout


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _postgres_bin() -> str | None:
  """The directory of initdb/pg_ctl, installing the OS package first where that is possible (root)."""
  found = _find_initdb()
  if not found and os.geteuid() == 0 and shutil.which("apt-get"):
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], capture_output=True, timeout=600,
                   check=False, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    found = _find_initdb()
  return os.path.dirname(os.path.realpath(found)) if found else None


def _find_initdb() -> str | None:
  """initdb on PATH, or in Debian's versioned /usr/lib/postgresql/N/bin (newest first)."""
  versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
  return shutil.which("initdb") or (versioned[-1] if versioned else None)


@pytest.fixture
def postgres_url():
  """A private PostgreSQL cluster on a free port (as user `postgres` when run as root); its URL."""
  pytest.importorskip("psycopg2", reason="psycopg2-binary (the test extra) is not installed")
  bin_dir = _postgres_bin()
  if not bin_dir:
    pytest.skip("PostgreSQL is not installed and cannot be installed here (apt-get as root)")
  root = tempfile.mkdtemp(prefix="occam-pg-")
  prefix = []
  if os.geteuid() == 0:  # initdb refuses root
    shutil.chown(root, "postgres")
    prefix = ["runuser", "-u", "postgres", "--"]
  data, port = os.path.join(root, "data"), _free_port()

  def pg(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(prefix + list(command), capture_output=True, text=True, timeout=60, check=False)

  steps = [pg(f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "--auth=trust"),
           pg(f"{bin_dir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "log"), "-o",
              f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")]
  if any(step.returncode for step in steps):
    shutil.rmtree(root, ignore_errors=True)
    pytest.skip(f"the PostgreSQL server did not start: {[s.stderr[-500:] for s in steps]}")
  try:
    created = pg(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "occam")
    assert created.returncode == 0, created.stderr
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/occam"  # SQLAlchemy 2.1's default is psycopg 3
  finally:
    pg(f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_workers_share_one_postgresql_study(tmp_path, postgres_url):
  study_dir = str(tmp_path / "study")
  result = run_module("tune", tune_args(study_dir, *SPACE, "--trials=3", "--parallel=2",
                                        f"--storage={postgres_url}", "--study=pg"))
  assert result.returncode == 0, result.stdout[-4000:]
  assert not os.path.exists(os.path.join(study_dir, study_storage.DB_FILE))
  trials = optuna.load_study(study_name="pg", storage=postgres_url).get_trials()
  assert [t.state.name for t in trials] == ["COMPLETE"] * 3
  model_dirs = [t.user_attrs["model_dir"] for t in trials]
  assert len(set(model_dirs)) == 3 and all(sweep.is_done(d) for d in model_dirs)
  assert len({tuple(t.params.items()) for t in trials}) == 3
  # Both workers joined the one study (which of them runs which trial is a race: on a quiet machine
  # the first may finish all three before the second has imported TensorFlow).
  assert "tune: worker 0: joined study 'pg'" in result.stdout
  assert "tune: worker 1: joined study 'pg'" in result.stdout


@pytest.mark.multiprocess
def test_a_missing_postgresql_database_exits_2_naming_the_storage_password_masked(tmp_path, capsys,
                                                                                  postgres_url):
  """A real server that answers and refuses: one line naming the storage, nothing written."""
  url = postgres_url.replace("postgres@", "postgres:s3cret@").rsplit("/", 1)[0] + "/no_such_db"
  assert tune.main(tune_args(str(tmp_path / "study"), *SPACE, f"--storage={url}")) == sweep.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "s3cret" not in err and "Traceback" not in err, err
  assert f"--storage={url.replace('s3cret', '***')}: cannot open the study's storage: " in err
  assert '"no_such_db" does not exist' in err
  assert not (tmp_path / "study").exists()
