r"""Screenshots of TensorBoard and of `occam-report`'s plots for the docs, made from real runs.

    python scripts/make_screenshots.py --root=/tmp/occam_screenshots --parallel=2

Trains the quickstart (one run, evaluated every 100 steps) and a small sweep (the noisy digits of
docs/EXPERIMENTS.md, claim 1, shortened to 1,000 steps, with early stopping: `L2.scale` x 3 seeds),
reports on the sweep with `occam-report`, starts a real `tensorboard` on localhost for each, and
photographs its pages with headless Chromium (`chromium --headless --screenshot`; Debian/Ubuntu:
`apt-get install chromium`). Writes to docs/images/:

  tensorboard_scalars.png         the quickstart's SCALARS tab: train, train_eval and eval accuracy and loss
  tensorboard_custom_scalars.png  its CUSTOM SCALARS tab: train, train_eval, eval and test overlaid
  tensorboard_hparams.png         the sweep's HPARAMS tab: the strength next to the held-out metrics
  report_vs_strength.png          `occam-report`'s plots of the sweep (mean over seeds, 95% band,
  report_curves.png               best point starred)

Each image is decoded afterwards and checked for its size (and that it is not blank). The runs
resume: a rerun with the same --root trains nothing that finished and only retakes the pictures.
About 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `python scripts/make_screenshots.py` from anywhere: this checkout's Occam

from trainer.experiments import plots, report  # noqa: E402

IMAGES = os.path.join(REPO, "docs", "images")
RENDER_BUDGET_MS = 20000  # Chromium's virtual time for the page's scripts and data requests
QUICKSTART = ["--gin_file=gin_configs/quickstart.gin", "--gin_bindings=Trainer.eval_every=100"]
SWEEP = ["--gin_file=gin_configs/experiments/claim1_l2_u_curve.gin",
         "--grid", "L2.scale=[0, 1e-3, 1e-2, 3e-2]", "--grid", "Trainer.seed=[0, 1, 2]",
         "--gin_bindings=Trainer.train_steps=1000", "--gin_bindings=Trainer.early_stopping=@EarlyStopping()"]


@dataclasses.dataclass(frozen=True)
class Page:
  """A TensorBoard page to photograph: the image's name, the logdir ('quickstart' or 'sweep'), the
  page with its URL hash parameters, and the browser window in pixels."""
  name: str
  source: str
  page: str
  window: tuple[int, int] = (1400, 900)


PAGES = (
    Page("tensorboard_scalars", "quickstart",
         "scalars&_smoothingWeight=0&tagFilter=" + urllib.parse.quote("(train|eval)/(accuracy|loss)$")),
    Page("tensorboard_custom_scalars", "quickstart", "custom_scalars&_smoothingWeight=0"),
    Page("tensorboard_hparams", "sweep", "hparams", window=(1800, 800)),  # wide: the metric columns
)


def run(command: Sequence[str]) -> None:
  """Runs `command` from the repo root (the `python -m` modules of this checkout), failing loudly."""
  print(f"== {' '.join(command)}", file=sys.stderr, flush=True)
  subprocess.run(command, cwd=REPO, check=True, env=dict(os.environ, PYTHONPATH=REPO))


def train(root: str, parallel: int) -> tuple[str, str]:
  """The quickstart run and the sweep under `root` (each resumes, or is skipped when finished)."""
  quickstart, sweep_dir = os.path.join(root, "quickstart"), os.path.join(root, "sweep")
  if not os.path.exists(os.path.join(quickstart, "results.json")):
    run([sys.executable, "-m", "trainer.main", *QUICKSTART, f"--model_dir={quickstart}"])
  run([sys.executable, "-m", "trainer.experiments.sweep", *SWEEP, f"--sweep_dir={sweep_dir}",
       f"--parallel={parallel}"])
  return quickstart, sweep_dir


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _get_json(url: str):
  with urllib.request.urlopen(url, timeout=5) as response:
    return json.load(response)


class TensorBoard:
  """A real `tensorboard` serving `logdir` on localhost, until the `with` block ends.

  Entering waits until the server lists `runs` runs and its custom-scalars and HParams plugins are
  active, so a page opened then has its data.
  """

  def __init__(self, logdir: str, runs: int):
    self.url = f"http://127.0.0.1:{free_port()}"
    self._logdir, self._runs = logdir, runs
    self._process: subprocess.Popen | None = None

  def __enter__(self) -> TensorBoard:
    port = self.url.rsplit(":", 1)[1]
    self._process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={self._logdir}", "--host=127.0.0.1",
         f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
      if self._process.poll() is not None:
        raise RuntimeError(f"tensorboard exited with status {self._process.returncode}")
      try:
        plugins = _get_json(f"{self.url}/data/plugins_listing")
        if (len(_get_json(f"{self.url}/data/runs")) >= self._runs
            and all(plugins.get(name, {}).get("enabled") for name in ("custom_scalars", "hparams"))):
          return self
      except (urllib.error.URLError, ConnectionError, ValueError):
        pass
      time.sleep(1)
    self.__exit__()
    raise RuntimeError(f"tensorboard on {self._logdir} did not serve its {self._runs} runs within 120 s")

  def __exit__(self, *_) -> None:
    if self._process and self._process.poll() is None:
      self._process.terminate()
      self._process.wait(timeout=30)


def chromium() -> str:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    if shutil.which(name):
      return shutil.which(name)
  raise SystemExit("no Chromium found: install it (Debian/Ubuntu: apt-get install chromium)")


def screenshot(url: str, path: str, window: tuple[int, int]) -> None:
  """`url` rendered by headless Chromium into the PNG `path`, `window` pixels.

  `--no-sandbox` lets it run as root (containers, CI); it only ever opens this local server.
  """
  command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={RENDER_BUDGET_MS}",
             f"--screenshot={path}", url]
  subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)


def check_image(path: str, size: tuple[int, int]) -> None:
  """Decodes the PNG and checks its (width, height) and that it is not one flat colour."""
  from matplotlib import image
  pixels = image.imread(path)
  if pixels.shape[1::-1] != size or pixels[..., :3].std() < 0.02:
    raise RuntimeError(f"{path}: {pixels.shape[1::-1]} pixels, std {pixels[..., :3].std():.3f}; "
                       f"expected {size} and an image with content")
  print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB, {size[0]}x{size[1]})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
  parser.add_argument("--root", default="/tmp/occam_screenshots", help="where the runs live")
  parser.add_argument("--parallel", type=int, default=2, help="sweep points trained at once")
  parser.add_argument("--dpi", type=float, default=100, help="of the report plots (committed: keep small)")
  args = parser.parse_args(argv)
  quickstart, sweep_dir = train(args.root, args.parallel)
  os.makedirs(IMAGES, exist_ok=True)

  style = plots.PlotStyle(dpi=args.dpi)
  built = report.build([sweep_dir], os.path.join(args.root, "report"), style=style)
  print(built.markdown, file=sys.stderr)
  for name, panels in (("vs_strength", len(report.DEFAULT_PANELS)), ("curves", len(report.DEFAULT_CURVES))):
    path = os.path.join(IMAGES, f"report_{name}.png")
    shutil.copyfile(built.files[f"{name}.png"], path)
    check_image(path, (round(plots.PANEL_INCHES[0] * args.dpi * panels),
                       round(plots.PANEL_INCHES[1] * args.dpi)))

  # The quickstart's run directory holds train/ and eval/; the sweep's, one session per point.
  logdirs = {"quickstart": (quickstart, 2), "sweep": (sweep_dir, len(built.runs))}
  for source, (logdir, runs) in logdirs.items():
    with TensorBoard(logdir, runs) as server:
      for page in PAGES:
        if page.source == source:
          path = os.path.join(IMAGES, f"{page.name}.png")
          screenshot(f"{server.url}/#{page.page}", path, page.window)
          check_image(path, page.window)
  return 0


if __name__ == "__main__":
  sys.exit(main())
