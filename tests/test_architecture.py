"""The package's shape: no module imports upward, and one call registers every configurable."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

# The parts of `trainer/`, bottom up: a module may import its own part and the parts before it.
LAYERS = ("common", "runtime", "data", "regularization", "metrics", "loop", "config", "api", "evaluation",
          "main", "experiments", "benchmarks")


def _part(module: str) -> str:
  """`trainer.loop.builder` -> 'loop'; `trainer.api` -> 'api'; `models.mlp` -> 'models'."""
  parts = module.split(".")
  return parts[1] if parts[0] == "trainer" and len(parts) > 1 else parts[0]


def _imports(path: str) -> list[str]:
  """Every module a file imports, from `import x` and `from x import y` (y resolved when a module)."""
  tree = ast.parse(open(path).read(), path)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                if node.module == "trainer"]
  return found


def _modules(package: str):
  for root, _, names in os.walk(os.path.join(REPO, package)):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        yield module, path


def test_no_module_imports_upward():
  violations = []
  for module, path in _modules("trainer"):
    own = _part(module)
    if own == "trainer":  # the package facade, which only re-exports lazily
      continue
    for imported in _imports(path):
      if imported.startswith("trainer.") and _part(imported) in LAYERS:
        if LAYERS.index(_part(imported)) > LAYERS.index(own):
          violations.append(f"{module} ({own}) imports {imported}")
  for module, path in _modules("models"):
    for imported in _imports(path):
      if imported.startswith("trainer.") and _part(imported) not in ("common", "runtime"):
        violations.append(f"{module} imports {imported} (models may use trainer.common/runtime only)")
  assert not violations, "\n".join(violations)


def test_every_part_of_trainer_is_a_known_layer():
  parts = {_part(module) for module, _ in _modules("trainer")} - {"trainer"}
  assert parts <= set(LAYERS), parts - set(LAYERS)


# The benchmark scripts: command lines over `trainer.benchmarks`, where the machinery (and its tests) live.
BENCHMARK_SCRIPTS = ("benchmark.py", "benchmark_models.py", "benchmark_data.py", "benchmark_input.py",
                     "benchmark_tuning.py", "metrics_overhead.py", "device_check.py")


def test_benchmark_scripts_are_thin_entry_points():
  """No function or class of their own, and nothing imported but the package's benchmarks (and os/sys)."""
  problems = []
  for name in BENCHMARK_SCRIPTS:
    path = os.path.join(REPO, "scripts", name)
    tree = ast.parse(open(path).read(), path)
    problems += [f"{name} defines {node.name}" for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    problems += [f"{name} imports {module}" for module in _imports(path)
                 if module not in ("os", "sys") and not module.startswith("trainer.benchmarks")]
  assert not problems, "\n".join(problems)


@pytest.mark.multiprocess
def test_register_all_alone_makes_every_configurable_known():
  """In a fresh process: no side-effect import is needed before gin can parse the shipped configs."""
  code = ("from trainer.config import parsing, registry; registry.register_all(); "
          "import gin; from trainer.loop.settings import Trainer; "
          "parsing.parse(['gin_configs/quickstart.gin', 'gin_configs/cnn.gin'], []); "
          "names = ['Trainer', 'MLP', 'ResNet', 'digits', 'tfrecord', 'L2', 'L1', 'ProximalL1', "
          "'DecoupledWeightDecay', 'VariableSelector', 'Monitor', 'EarlyStopping', 'WarmupCosine', 'Adam', "
          "'KerasL2', 'softmax_cross_entropy']; [gin.get_configurable(n) for n in names]; print('ok')")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.multiprocess
def test_importing_the_package_does_not_import_tensorflow():
  """`import trainer` (and so `--help`) stays cheap; the public API is loaded on first use."""
  code = "import sys, trainer; assert 'tensorflow' not in sys.modules; print(trainer.__version__)"
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr[-3000:]


def test_nothing_reaches_back_into_the_settings_at_run_time():
  """Runners, driver, Controller and programs get built parts and the frozen `RunConfig`: none imports the
  settings module or reads a `.settings` attribute; the train step knows the terms' roles, not their types."""
  for name in ("runners", "driver", "controller", "programs"):
    path = os.path.join(REPO, "trainer", "loop", f"{name}.py")
    tree = ast.parse(open(path).read(), path)
    assert "trainer.loop.settings" not in _imports(path), name
    reads = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "settings"]
    assert not reads, name
  programs = os.path.join(REPO, "trainer", "loop", "programs.py")
  calls = [node.func.id for node in ast.walk(ast.parse(open(programs).read())) if isinstance(node, ast.Call)
           and isinstance(node.func, ast.Name)]
  assert "isinstance" not in calls
  term_modules = {"trainer.regularization.mixing", "trainer.regularization.sharpness_aware"}
  assert not term_modules & set(_imports(programs))


@pytest.mark.parametrize("package, extension_points", [
    ("trainer.data", {"Splits", "ArrayData", "IndexedData", "RecordData"}),
    ("trainer.regularization", {"LossTerm", "UpdateTerm", "BatchTransform", "GradientEstimator",
                                "VariableSelector"}),
    ("trainer.loop", {"Trainer", "RunConfig", "build", "Run", "Action", "TrainRunner", "EvalRunner"}),
    ("trainer.metrics", {"Tag", "find", "Monitor"}),
])
def test_each_subpackage_exports_its_extension_points(package, extension_points):
  module = importlib.import_module(package)
  assert extension_points <= set(module.__all__)
  assert all(getattr(module, name) is not None for name in module.__all__)
