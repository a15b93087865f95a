"""The README's commands work as written from a fresh shell after the two set-up commands.

A fresh shell is `bash --noprofile --norc` with an empty environment (only HOME and the system PATH):
the README's own activation line must put every executable it names on PATH. Each executable is asked
for its help, which must list every flag the README passes it; the first run is trained for real.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests import helpers

README = os.path.join(helpers.REPO, "README.md")
SETUP = ("make ",)  # the set-up commands themselves (they build the virtualenv the others run in)


def _blocks() -> list[tuple[str, str]]:
  """(language, body) of every fenced block of the README."""
  text = open(README).read()
  return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def _shell_commands() -> list[list[str]]:
  """Every command line of the README's shell blocks, continuation lines joined, comments dropped."""
  commands = []
  for language, body in _blocks():
    if language:  # ```python blocks are Python, not shell
      continue
    for line in body.replace("\\\n", " ").splitlines():
      words = shlex.split(line, comments=True)
      if words and not line.startswith(SETUP):
        commands.append(words)
  return commands


def _activation() -> str:
  """The README's activation line, pointed at the virtualenv running this test when it is not `.venv`."""
  [line] = [" ".join(words) for words in _shell_commands() if words[0] in ("source", ".")]
  venv = os.path.join(helpers.REPO, ".venv")
  if os.path.realpath(sys.prefix) != os.path.realpath(venv):
    line = line.replace(".venv", shlex.quote(sys.prefix))
  return line


def _fresh_shell(command: str, timeout: float = 120) -> subprocess.CompletedProcess:
  env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
  if os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(helpers.REPO, ".venv")):
    env["PYTHONPATH"] = helpers.REPO  # this checkout, when the virtualenv was installed from another one
  return subprocess.run(["bash", "--noprofile", "--norc", "-c", f"{_activation()} && {command}"],
                        cwd=helpers.REPO, env=env, timeout=timeout, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)


def _program(words: list[str]) -> tuple[str, ...]:
  """What a command runs: `python -m module` or the executable's name."""
  return tuple(words[:3]) if words[:2] == ["python", "-m"] else (words[0],)


def test_the_readme_activates_its_virtualenv_and_names_only_known_programs():
  programs = {_program(words) for words in _shell_commands() if words[0] not in ("source", ".")}
  assert programs == {("python", "-m", "trainer.main"), ("tensorboard",), ("occam-sweep",),
                      ("occam-report",), ("occam-tune",)}, programs


@pytest.mark.multiprocess
def test_every_readme_program_runs_from_a_fresh_shell_and_knows_its_flags():
  flags: dict[tuple[str, ...], set[str]] = {}
  for words in _shell_commands():
    if words[0] not in ("source", "."):
      flags.setdefault(_program(words), set()).update(
          word.split("=")[0] for word in words if word.startswith("--"))
  for program, used in sorted(flags.items()):
    shown = _fresh_shell(" ".join(program) + " --help")
    assert shown.returncode == 0, (program, shown.stdout[-2000:])
    missing = [flag for flag in used if flag not in shown.stdout]
    assert not missing, f"{' '.join(program)} --help does not list {missing}"


@pytest.mark.multiprocess
def test_the_first_run_trains_as_written_from_a_fresh_shell(tmp_path):
  [first] = [words for words in _shell_commands() if "--model_dir=runs/quickstart" in words]
  run_dir = str(tmp_path / "quickstart")
  command = [word.replace("runs/quickstart", run_dir) for word in first]
  # The README's own run, shortened: the command line is the README's; only the run length differs.
  command += ["--gin_bindings=Trainer.train_steps=100", "--gin_bindings=Trainer.steps_per_loop=50",
              "--gin_bindings=Trainer.eval_every=50"]
  process = _fresh_shell(shlex.join(command), timeout=300)
  assert process.returncode == 0, process.stdout[-3000:]
  assert os.path.exists(os.path.join(run_dir, "results.json")), process.stdout[-3000:]
  assert "final | results in" in process.stdout
