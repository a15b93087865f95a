"""Refuses to resume a run with a configuration that would silently make it a different experiment.

The first start of a run stores its parsed gin config (`model_dir/config.gin`). A restart compares
the new config with it binding by binding (parsed by gin itself, so formatting does not matter).
Changing how long or how often (train steps, evaluation/checkpoint intervals, loop length, metric
settings, early-stopping patience) is safe; anything else (the model, the data, a regularization
strength, the optimizer) is refused with a diff, unless the user opts in with --allow_config_change.
"""

from __future__ import annotations

import fnmatch
import glob
import os

import gin
from absl import logging

CONFIG_FILE = "config.gin"
SAFE_TO_CHANGE = ("Trainer.train_steps", "Trainer.eval_every", "Trainer.checkpoint_every",
                  "Trainer.steps_per_loop", "Trainer.keep_checkpoints", "Trainer.eval_batch_size",
                  "Monitor.*", "EarlyStopping.patience", "EarlyStopping.min_delta", "Trainer.on_nonfinite",
                  "Trainer.restore_lr_factor", "Trainer.max_restores")


class ConfigChangedError(ValueError):
  """The config differs from the one that started the run in a way that changes the experiment."""


def bindings(text: str) -> dict[str, str]:
  """`{'scope/Configurable.parameter': 'value'}` for every binding in a gin config text."""
  parser = gin.config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True))
  result = {}
  for statement in parser:
    if isinstance(statement, gin.config_parser.BindingStatement):
      scope = f"{statement.scope}/" if statement.scope else ""
      result[f"{scope}{statement.selector}.{statement.arg_name}"] = repr(statement.value)
  return result


def _is_safe(key: str) -> bool:
  return any(fnmatch.fnmatchcase(key.split("/")[-1], pattern) for pattern in SAFE_TO_CHANGE)


def unsafe_changes(old_text: str, new_text: str) -> list[str]:
  """Diff lines (`- key = old`, `+ key = new`) for the bindings that changed and are not safe to change."""
  old, new = bindings(old_text), bindings(new_text)
  lines = []
  for key in sorted(set(old) | set(new)):
    if old.get(key) != new.get(key) and not _is_safe(key):
      if key in old:
        lines.append(f"- {key} = {old[key]}")
      if key in new:
        lines.append(f"+ {key} = {new[key]}")
  return lines


def check(model_dir: str, *, allow_change: bool) -> None:
  """Refuses (or, allowed, logs) unsafe changes between the parsed gin config and the run's stored one.

  Only a run that has a checkpoint can be changed by a new config; before that there is nothing to keep.
  """
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.exists(path) or not glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index")):
    return
  with open(path) as f:
    changes = unsafe_changes(f.read(), gin.config_str())
  if not changes:
    return
  diff = "\n".join(changes)
  if not allow_change:
    raise ConfigChangedError(
        f"--model_dir={model_dir} was started with a different configuration ({path}); resuming would "
        f"silently train a different experiment. Changed bindings:\n{diff}\n"
        f"Safe to change: {', '.join(SAFE_TO_CHANGE)}. Use a fresh --model_dir, or pass "
        "--allow_config_change to continue anyway.")
  logging.warning("continuing %s with a changed configuration (--allow_config_change):\n%s", model_dir, diff)


def record(model_dir: str) -> None:
  """Stores the parsed gin config as the run's reference (atomically), once the run has started."""
  path = os.path.join(model_dir, CONFIG_FILE)
  temporary = path + ".tmp"
  with open(temporary, "w") as f:
    f.write(gin.config_str())
  os.replace(temporary, path)
