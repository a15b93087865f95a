"""Refuses to resume a run with a configuration that would silently make it a different experiment.

The first start of a run stores its parsed gin config (`model_dir/config.gin`). A restart compares
the new config with it binding by binding (parsed by gin itself, so formatting does not matter).
Changing how long or how often (train steps, evaluation/checkpoint intervals, loop length, metric
settings, early-stopping patience) is safe; anything else (the model, the data, a regularization
strength, the optimizer) is refused with a diff, unless the user opts in with --allow_config_change.
Which parameters are safe is declared next to them, in each configurable's `RESUME_SAFE` tuple. A
binding that states a parameter's default value is not a change (shipped configs may stop repeating
defaults without refusing the runs they started).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import os

import gin
import tensorflow as tf
from absl import logging

from trainer.common import files
from trainer.config import registry
from trainer.runtime import checkpointing

CONFIG_FILE = "config.gin"


def safe_to_change() -> tuple[str, ...]:
  """`Configurable.parameter` patterns a resume may change: every configurable's `RESUME_SAFE`."""
  registry.register_all()
  patterns = []
  for module in map(importlib.import_module, registry.CONFIGURABLE_MODULES):
    for value in vars(module).values():
      if isinstance(value, type):
        patterns += [f"{value.__name__}.{parameter}" for parameter in getattr(value, "RESUME_SAFE", ())]
  return tuple(dict.fromkeys(patterns))


class ConfigChangedError(ValueError):
  """The config differs from the one that started the run in a way that changes the experiment."""


def bindings(text: str) -> dict[str, str]:
  """`{'scope/Configurable.parameter': 'value'}` for every binding in a gin config text."""
  registry.register_all()  # so that references parse to their names (`@MLP`), not unknown objects
  parser = gin.config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True))
  result = {}
  for statement in parser:
    if isinstance(statement, gin.config_parser.BindingStatement):
      scope = f"{statement.scope}/" if statement.scope else ""
      result[f"{scope}{statement.selector}.{statement.arg_name}"] = repr(statement.value)
  return result


def _is_safe(key: str, safe: tuple[str, ...]) -> bool:
  return any(fnmatch.fnmatchcase(key.split("/")[-1], pattern) for pattern in safe)


def _default(key: str) -> str | None:
  """repr of the default of `key`'s parameter (`Configurable.parameter`), or None if it has none."""
  selector, _, parameter = key.split("/")[-1].rpartition(".")
  try:
    signature = inspect.signature(gin.get_configurable(selector))
  except (ValueError, TypeError):
    return None
  default = signature.parameters.get(
      parameter, inspect.Parameter("_", inspect.Parameter.KEYWORD_ONLY)).default
  if default is inspect.Parameter.empty or default is gin.REQUIRED:
    return None
  return f"@{default.__name__}" if callable(default) and hasattr(default, "__name__") else repr(default)


def unsafe_changes(old_text: str, new_text: str) -> list[str]:
  """Diff lines (`- key = old`, `+ key = new`) for the bindings that changed and are not safe to change."""
  old, new = bindings(old_text), bindings(new_text)
  safe = safe_to_change()
  lines = []
  for key in sorted(set(old) | set(new)):
    old_value, new_value = old.get(key, _default(key)), new.get(key, _default(key))
    if old_value != new_value and not _is_safe(key, safe):
      if key in old:
        lines.append(f"- {key} = {old[key]}")
      if key in new:
        lines.append(f"+ {key} = {new[key]}")
  return lines


def check(model_dir: str, *, allow_change: bool) -> None:
  """Refuses (or, allowed, logs) unsafe changes between the parsed gin config and the run's stored one.

  Only a run that has a checkpoint can be changed by a new config; before that there is nothing to keep.
  A stored config that is missing, empty or unparseable while checkpoints exist cannot vouch for the
  run, so it is refused like a change. The stored file is only parsed as data, never executed.
  """
  path = os.path.join(model_dir, CONFIG_FILE)
  if not checkpointing.checkpoint_steps(os.path.join(model_dir, "checkpoints")):
    return
  try:
    with tf.io.gfile.GFile(path) as f:
      stored = f.read()
    if not stored.strip():
      raise ValueError("the file is empty")
    changes = unsafe_changes(stored, gin.config_str())
  except Exception as error:  # a missing file (NotFoundError) or any gin parse error (SyntaxError, ...)
    problem = (f"{path} is missing or damaged ({type(error).__name__}: {_first_line(error)}), so this resume "
               "cannot be checked against the configuration that started the run")
    if not allow_change:
      raise ConfigChangedError(
          f"--model_dir={model_dir}: {problem}. Restore config.gin (operative_config.gin in the same "
          "directory has the same bindings), or pass --allow_config_change to continue with this "
          "configuration (it then becomes the stored one).") from error
    logging.warning("%s; continuing (--allow_config_change)", problem)
    return
  if not changes:
    return
  diff = "\n".join(changes)
  if not allow_change:
    raise ConfigChangedError(
        f"--model_dir={model_dir} was started with a different configuration ({path}); resuming would "
        f"silently train a different experiment. Changed bindings:\n{diff}\n"
        f"Safe to change: {', '.join(safe_to_change())}. Use a fresh --model_dir, or pass "
        "--allow_config_change to continue anyway.")
  logging.warning("continuing %s with a changed configuration (--allow_config_change):\n%s", model_dir, diff)


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else "no message"


def record(model_dir: str) -> None:
  """Stores the parsed gin config as the run's reference (atomically), once the run has started."""
  files.write_text(os.path.join(model_dir, CONFIG_FILE), gin.config_str())
