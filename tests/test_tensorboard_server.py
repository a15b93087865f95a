"""A real `tensorboard` server over a two-run L2 sweep serves Occam's scalar tags and HParams sessions.

The sweep's runs differ only in `L2.scale`; through the HTTP API the HParams dashboard must list
both sessions with their `reg/l2/scale`, and offer `eval/accuracy` (group `eval`) as a metric: the
"lambda against eval accuracy" view of a sweep.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import FAST, REPO, train_in_process

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
