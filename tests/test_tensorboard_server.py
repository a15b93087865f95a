"""A real `tensorboard` server over a two-run L2 sweep serves Occam's scalar tags and HParams sessions.

The sweep's runs differ only in `L2.scale`; through the HTTP API the HParams dashboard must list
both sessions with their `reg/l2/scale`, and offer `eval/accuracy` (group `eval`) as a metric: the
"lambda against eval accuracy" view of a sweep. The custom-scalars layout and the declared HParams
config (trainer/metrics/dashboard.py) are read back the same way.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import FAST, REPO, train_in_process
from trainer.metrics import dashboard
from trainer.metrics import tags as tags_lib

pytestmark = pytest.mark.multiprocess  # a real tensorboard server process

SCALES = {"l2_0": 0.0, "l2_1e-3": 1e-3}
STARTUP_SECONDS = 60
SESSION_REQUEST = {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                   "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                       "STATUS_RUNNING"]}


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _request(url: str, body: dict | None = None) -> dict:
  """GET `url`, or POST `body` as JSON (the HParams routes read the raw JSON body)."""
  data = None if body is None else json.dumps(body).encode()
  request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=10) as response:
    return json.loads(response.read())


def _wait_for_runs(base: str, runs: set[str], server: subprocess.Popen) -> dict:
  """Polls the scalar tags until every run in `runs` is loaded; fails after STARTUP_SECONDS."""
  deadline = time.monotonic() + STARTUP_SECONDS
  while time.monotonic() < deadline:
    if server.poll() is not None:
      pytest.fail(f"tensorboard exited with {server.returncode}: {server.stdout.read()}")
    try:
      tags = _request(f"{base}/data/plugin/scalars/tags")
      if runs <= set(tags):
        return tags
    except OSError:  # Not listening yet.
      pass
    time.sleep(0.5)
  pytest.fail(f"tensorboard did not serve runs {sorted(runs)} within {STARTUP_SECONDS} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """The base URL of a tensorboard serving a finished two-run sweep; the server is killed after."""
  logdir = tmp_path_factory.mktemp("sweep")
  for name, scale in SCALES.items():
    train_in_process(str(logdir / name), FAST + ["Trainer.train_steps=100", f"L2.scale={scale}"])
  port = _free_port()
  process = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
       "--host", "127.0.0.1"],
      cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  try:
    base = f"http://127.0.0.1:{port}"
    tags = _wait_for_runs(base, {f"{name}/{d}" for name in SCALES for d in ("train", "eval")}, process)
    yield base, tags
  finally:
    process.kill()
    process.wait(timeout=30)
    process.stdout.close()


def test_scalar_tags_are_served(server):
  _, tags = server
  for name in SCALES:
    assert {"norms/weights_l2", "norms/grad_l2", "norms/distance_from_init", "sparsity/zero_fraction",
            "sparsity/near_zero_fraction", "norms/dense_0/kernel_l2", "train/loss",
            "penalty/l2"} <= set(tags[f"{name}/train"])
    assert {"eval/accuracy", "train_eval/accuracy", "gap/loss", "gap/accuracy"} <= set(tags[f"{name}/eval"])


def test_hparams_experiment_lists_the_sweep(server):
  base, _ = server
  experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
  hparams = {info["name"] for info in experiment["hparamInfos"]}
  assert {"reg/l2/scale", "learning_rate", "optimizer", "model", "batch_size", "label_noise"} <= hparams
  metrics = {(m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]}
  assert {("eval", "eval/accuracy"), ("eval", "gap/accuracy"), ("train", "norms/weights_l2")} <= metrics

  groups = _request(f"{base}/data/plugin/hparams/session_groups", SESSION_REQUEST)["sessionGroups"]
  scales = {group["name"]: group["hparams"]["reg/l2/scale"] for group in groups}
  assert scales == pytest.approx(SCALES)
  for group in groups:
    accuracy = [m for m in group["metricValues"] if m["name"]["tag"] == "eval/accuracy"]
    assert accuracy and 0.5 < accuracy[0]["value"] <= 1.0, group


def test_custom_scalars_layout_overlays_train_and_eval(server):
  base, served = server
  layout = _request(f"{base}/data/plugin/custom_scalars/layout")
  charts = {chart["title"]: chart["multiline"]["tag"] for category in layout["category"]
            for chart in category["chart"]}
  assert [category["title"] for category in layout["category"]] == [c for c, _ in dashboard.LAYOUT]
  assert charts["loss: train vs eval"] == ["^train/data_loss$", "^train_eval/loss$", "^eval/loss$",
                                           "^test/loss$"]
  assert charts["accuracy: train vs train_eval vs eval"] == [
      "^train/accuracy$", "^train_eval/accuracy$", "^eval/accuracy$", "^test/accuracy$"]
  # Every chart's regexes name registered tags, and together they find tags the runs really wrote.
  for _, chart_specs in dashboard.LAYOUT:
    for _, patterns in chart_specs:
      assert all(tags_lib.find(pattern.replace("<term>", "l2").replace("<layer>", "dense_0"))
                 for pattern in patterns)
  written = set().union(*(set(tags) for tags in served.values()))
  for regexes in charts.values():
    if regexes != ["^optimizer/learning_rate$", "^optimizer/weight_decay$"]:
      assert any(re.match(regex, tag) for regex in regexes for tag in written), regexes


def test_hparams_config_orders_strengths_first_and_declares_registry_metrics_once(server):
  base, served = server
  experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
  names = [info["name"] for info in experiment["hparamInfos"]]
  assert names[0] == "reg/l2/scale"  # the strength first, whatever the TensorBoard version sorts by
  session = _request(f"{base}/data/plugin/hparams/session_groups", SESSION_REQUEST)["sessionGroups"][0]
  assert set(names) == set(session["hparams"])
  metrics = [(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]]
  assert metrics == [(entry.directory, entry.pattern) for entry in tags_lib.hparams_metrics()]
  assert not any(tag.startswith(("perf/", "norms/dense")) for _, tag in metrics)
  described = {m["name"]["tag"]: m.get("description", "") for m in experiment["metricInfos"]}
  assert tags_lib.find("gap/accuracy").doc in described["gap/accuracy"]


def test_no_stray_run_and_tag_descriptions_come_from_the_registry(server):
  _, served = server
  # Only the train/ and eval/ directories hold scalars: the session directory (the run's own, where
  # the HParams live) shows up in no scalar list.
  assert set(served) == {f"{name}/{d}" for name in SCALES for d in ("train", "eval")}
  assert tags_lib.find("eval/accuracy").doc in served["l2_0/eval"]["eval/accuracy"]["description"]
  penalty = served["l2_0/train"]["penalty/l2"]["description"]
  assert tags_lib.find("penalty/<term>").doc.split(",")[0] in penalty
