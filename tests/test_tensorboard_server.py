"""A real `tensorboard` server over a two-run L2 sweep serves Occam's scalar tags and HParams sessions.

The sweep's runs differ only in `L2.scale`; through the HTTP API the HParams dashboard must list one
row per run with its `reg/l2/scale` first and its metrics filled (`eval/accuracy`, ...): the "lambda
against eval accuracy" view of a sweep, both with the sweep's directory as the logdir and with one
run's directory opened directly (the README's `tensorboard --logdir runs/quickstart`). The
custom-scalars layout and the declared HParams config (trainer/metrics/dashboard.py) are read back
the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

from tests.helpers import FAST, REPO, train_in_process
from trainer.metrics import dashboard
from trainer.metrics import tags as tags_lib

pytestmark = pytest.mark.multiprocess  # a real tensorboard server process

SCALES = {"l2_0": 0.0, "l2_1e-3": 1e-3}
RUN = "l2_1e-3"  # the run also opened directly
STARTUP_SECONDS = 180  # a bound on a hang, not a measurement: a loaded 2-core machine starts it slowly
SESSION_REQUEST = {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                   "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                       "STATUS_RUNNING"]}


def _request(url: str, body: dict | None = None) -> dict:
  """GET `url`, or POST `body` as JSON (the HParams routes read the raw JSON body)."""
  data = None if body is None else json.dumps(body).encode()
  request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=10) as response:
    return json.loads(response.read())


def _wait_for_url(output: list[str], server: subprocess.Popen, deadline: float) -> str:
  """The address tensorboard prints once it listens (`--port 0`: a port the system gave it, so no other
  program on the machine can take it between a free-port probe and the server's start)."""
  while time.monotonic() < deadline:
    found = re.search(r"(http://127\.0\.0\.1:\d+)/", "".join(output))
    if found:
      return found.group(1)
    if server.poll() is not None:
      pytest.fail(f"tensorboard exited with {server.returncode}: {''.join(output)}")
    time.sleep(0.2)
  pytest.fail(f"tensorboard did not say where it listens within {STARTUP_SECONDS} s: {''.join(output)}")


def _wait_for_runs(base: str, runs: set[str], server: subprocess.Popen, output: list[str],
                   deadline: float) -> dict:
  """Polls the scalar tags until every run in `runs` is loaded; fails at `deadline`."""
  while time.monotonic() < deadline:
    if server.poll() is not None:
      pytest.fail(f"tensorboard exited with {server.returncode}: {''.join(output)}")
    try:
      tags = _request(f"{base}/data/plugin/scalars/tags")
      if runs <= set(tags):
        return tags
    except OSError:  # Not listening yet.
      pass
    time.sleep(0.5)
  pytest.fail(f"tensorboard did not serve runs {sorted(runs)} within {STARTUP_SECONDS} s")


@contextlib.contextmanager
def _serve(logdir: str, runs: set[str]):
  """The base URL and scalar tags of `tensorboard --logdir LOGDIR` once `runs` are loaded; killed after."""
  process = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--port", "0", "--host", "127.0.0.1"],
      cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  output: list[str] = []
  reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
  reader.start()
  try:
    deadline = time.monotonic() + STARTUP_SECONDS
    base = _wait_for_url(output, process, deadline)
    yield base, _wait_for_runs(base, runs, process, output, deadline)
  finally:
    process.kill()
    process.wait(timeout=30)
    reader.join(timeout=30)
    process.stdout.close()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> str:
  """A finished two-run sweep: one model_dir per `SCALES` entry."""
  logdir = tmp_path_factory.mktemp("sweep")
  for name, scale in SCALES.items():
    train_in_process(str(logdir / name), FAST + ["Trainer.train_steps=100", f"L2.scale={scale}"])
  return str(logdir)


@pytest.fixture(scope="module")
def server(sweep):
  """`tensorboard --logdir SWEEP` (the parent of the runs): its base URL and scalar tags."""
  with _serve(sweep, {f"{name}/{d}" for name in SCALES for d in ("train", "eval")}) as served:
    yield served


@pytest.fixture(scope="module")
def run_server(sweep):
  """`tensorboard --logdir RUN`, the README's command: one model_dir opened directly."""
  with _serve(os.path.join(sweep, RUN), {"train", "eval"}) as served:
    yield served


def test_scalar_tags_are_served(server):
  _, tags = server
  for name in SCALES:
    assert {"norms/weights_l2", "norms/grad_l2", "norms/distance_from_init", "sparsity/zero_fraction",
            "sparsity/near_zero_fraction", "norms/dense_0/kernel_l2", "train/loss",
            "penalty/l2"} <= set(tags[f"{name}/train"])
    assert {"eval/accuracy", "train_eval/accuracy", "gap/loss", "gap/accuracy"} <= set(tags[f"{name}/eval"])


def _assert_complete_hparams_table(base: str, served: dict, runs: dict[str, str]) -> None:
  """The HParams table of `runs` ({session group name: run prefix}) has one row per run, the strength
  first, and every declared metric the run wrote with its last value (the scalars route's)."""
  experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
  assert experiment["hparamInfos"][0]["name"] == "reg/l2/scale"
  declared = [m["name"]["tag"] for m in experiment["metricInfos"]]
  groups = _request(f"{base}/data/plugin/hparams/session_groups", SESSION_REQUEST)["sessionGroups"]
  assert sorted(group["name"] for group in groups) == sorted(runs)
  for group in groups:
    assert group["hparams"]["reg/l2/scale"] == pytest.approx(SCALES[group["name"]])
    prefix = runs[group["name"]]
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    written = {tag: f"{prefix}{d}" for d in ("train", "eval") for tag in served[f"{prefix}{d}"]}
    expected = [tag for tag in declared if tag in written]
    assert {"eval/accuracy", "test/accuracy", "gap/loss", "norms/weights_l2"} <= set(expected)
    assert sorted(values) == sorted(expected), group["name"]
    for tag in expected:
      series = _request(f"{base}/data/plugin/scalars/scalars?run={written[tag]}&tag={tag}")
      assert values[tag] == pytest.approx(series[-1][2], rel=1e-6), (group["name"], tag)


def test_hparams_table_of_a_sweep_directory(server):
  base, served = server
  experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
  hparams = {info["name"] for info in experiment["hparamInfos"]}
  assert {"reg/l2/scale", "learning_rate", "optimizer", "model", "batch_size", "label_noise"} <= hparams
  _assert_complete_hparams_table(base, served, {name: f"{name}/" for name in SCALES})


def test_hparams_table_of_a_run_directory_opened_directly(run_server):
  """`tensorboard --logdir runs/quickstart`: no session named "." without metrics, no stray "." run."""
  base, served = run_server
  _assert_complete_hparams_table(base, served, {RUN: ""})
  assert set(served) == {"train", "eval"}
  assert sorted(_request(f"{base}/data/runs")) == ["eval", "train"]


def test_custom_scalars_layout_overlays_train_and_eval(server):
  base, served = server
  layout = _request(f"{base}/data/plugin/custom_scalars/layout")
  charts = {chart["title"]: chart["multiline"]["tag"] for category in layout["category"]
            for chart in category["chart"]}
  assert [category["title"] for category in layout["category"]] == [c for c, _ in dashboard.LAYOUT]
  assert charts == {chart.title: list(chart.multiline.tag)
                    for category in dashboard.custom_scalars_layout().category for chart in category.chart}
  assert charts["accuracy: train/accuracy, train_eval/accuracy, eval/accuracy, test/accuracy"] == [
      "^train/accuracy$", "^train_eval/accuracy$", "^eval/accuracy$", "^test/accuracy$"]
  # Every chart but the decoupled decay's (no such term here) finds tags the runs really wrote, each
  # regex its own: the plugin's scalars route returns one tag per regex of a chart of single tags.
  written = set().union(*(set(tags) for tags in served.values()))
  for title, regexes in charts.items():
    if regexes != ["^optimizer/weight_decay$"]:
      assert any(re.match(regex, tag) for regex in regexes for tag in written), title
  accuracy = _request(f"{base}/data/plugin/custom_scalars/scalars?run=l2_0/eval&tag="
                      + urllib.parse.quote("|".join(f"({regex})" for regex in charts[
                          "accuracy: train/accuracy, train_eval/accuracy, eval/accuracy, test/accuracy"])))
  assert sorted(accuracy["tag_to_events"]) == ["eval/accuracy", "test/accuracy", "train_eval/accuracy"]


def test_hparams_config_orders_strengths_first_and_declares_registry_metrics_once(server):
  base, served = server
  experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
  names = [info["name"] for info in experiment["hparamInfos"]]
  assert names[0] == "reg/l2/scale"  # the strength first, whatever the TensorBoard version sorts by
  session = _request(f"{base}/data/plugin/hparams/session_groups", SESSION_REQUEST)["sessionGroups"][0]
  assert set(names) == set(session["hparams"])
  metrics = [(m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]]
  assert metrics == [("", entry.pattern) for entry in tags_lib.hparams_metrics()]
  assert not any(tag.startswith(("perf/", "norms/dense")) for _, tag in metrics)
  described = {m["name"]["tag"]: m.get("description", "") for m in experiment["metricInfos"]}
  assert tags_lib.find("gap/accuracy").doc in described["gap/accuracy"]


def test_no_stray_run_and_tag_descriptions_come_from_the_registry(server):
  base, served = server
  # Only the train/ and eval/ directories hold events: the run's own directory is no run.
  assert set(served) == {f"{name}/{d}" for name in SCALES for d in ("train", "eval")}
  assert sorted(_request(f"{base}/data/runs")) == sorted(served)
  assert tags_lib.find("eval/accuracy").doc in served["l2_0/eval"]["eval/accuracy"]["description"]
  penalty = served["l2_0/train"]["penalty/l2"]["description"]
  assert tags_lib.find("penalty/<term>").doc.split(",")[0] in penalty
