"""Parsing gin files and bindings into one clear error per mistake.

Gin is Occam's only configuration system. This module makes the shipped `gin_configs/` resolvable
from any working directory (so `include 'gin_configs/base.gin'` works after `pip install`), parses
each `--gin_file` and each `--gin_bindings` entry separately so that an error names the culprit,
and writes the operative config once everything configurable has been called.
"""

from __future__ import annotations

import importlib.util  # noqa: F401  (gin's file loader uses importlib.util without importing it)
import inspect
import os
import re
from typing import Mapping, Sequence

import gin

import gin_configs
from trainer.common import files, messages
from trainer.config import catalog, registry
from trainer.metrics import tags
from trainer.metrics.summaries import SummaryWriters
from trainer.regularization import tfa_optimizers


class ConfigError(ValueError):
  """A gin file or binding that cannot be used; the message names it."""


def package_search_path() -> str:
  """The directory holding the installed `gin_configs/` package (the repo root in a checkout)."""
  return os.path.dirname(os.path.dirname(os.path.abspath(gin_configs.__file__)))


def parse(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Parses files then bindings (bindings win), raising `ConfigError` that names the file or binding.

  Starts from an empty config: one call defines one run, also when several run in one process.
  """
  registry.register_all()
  gin.clear_config()
  search_path = package_search_path()
  if search_path not in gin.config._LOCATION_PREFIXES:
    gin.add_config_file_search_path(search_path)
  for path in gin_files:
    if not os.path.exists(path) and not os.path.exists(os.path.join(search_path, path)):
      raise ConfigError(f"--gin_file={path}: file not found (looked in {os.getcwd()} and {search_path})")
    _parse_one(f"--gin_file={path}", lambda p=path: gin.parse_config_file(p))
  for binding in gin_bindings:
    _parse_one(f"--gin_bindings={binding!r}", lambda b=binding: gin.parse_config(b))
  gin.finalize()


def _parse_one(culprit: str, parse_fn) -> None:
  try:
    parse_fn()
  except (ValueError, SyntaxError, TypeError, OSError, ImportError) as error:
    first, *rest = str(error).split("\n", 1)
    explained = f"{first}{_did_you_mean(first)}{tfa_optimizers.explain_config_error(str(error))}"
    raise ConfigError(messages.cap("\n".join([f"{culprit}: {explained}", *rest]))) from error
  except Exception as error:  # tokenize.TokenError and friends: the text is not gin at all.
    raise ConfigError(messages.cap(f"{culprit}: malformed gin ({type(error).__name__}: {error})")) from error


def _did_you_mean(message: str) -> str:
  """` (did you mean scale?)` after gin's unknown parameter or configurable: the closest names."""
  unknown_parameter = re.search(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'", message)
  if unknown_parameter:
    owner, parameter = unknown_parameter.groups()
    try:
      candidates = list(inspect.signature(gin.get_configurable(owner)).parameters)
    except (ValueError, TypeError):
      return ""
    close = catalog.closest(parameter, candidates)
  else:
    unknown_configurable = re.search(r"No configurable matching '([\w.]+)'", message)
    if not unknown_configurable:
      return ""
    close = catalog.closest(unknown_configurable.group(1), catalog.names())
  return f" (did you mean {', '.join(close)}?)" if close else ""


def write_operative_config(model_dir: str) -> str:
  """Writes `model_dir/operative_config.gin` atomically and returns its text."""
  text = gin.operative_config_str()
  files.write_text(os.path.join(model_dir, "operative_config.gin"), text)
  return text


class RecordOperativeConfig:
  """Train action: after the first host loop (when every configurable has been called), writes the
  operative config to `model_dir/operative_config.gin` and to TensorBoard (`config/operative_gin`)."""

  def __init__(self, model_dir: str, writers: SummaryWriters):
    self._model_dir, self._writers = model_dir, writers
    self._written = False

  def __call__(self, step: int, scalars: Mapping[str, float]) -> None:
    del scalars
    if not self._written:
      self._writers.write_text(tags.TRAIN, step, "config/operative_gin",
                               write_operative_config(self._model_dir))
      self._written = True
