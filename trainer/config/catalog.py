"""What a gin config can name, read from gin's registry: `--list_configurables` and `--describe NAME`.

Generated, never written by hand: after `registry.register_all()` every configurable a config may
bind (Occam's own and the registered Keras objects) is in gin's registry, with the callable it
wraps. gin has no public listing, so this reads its registry (`gin.config._REGISTRY`, a selector map).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Sequence

import gin

from trainer.config import registry

_GIN_INTERNAL = "gin"  # gin's own configurables (macro, constant, singleton): not part of a config


def _entries() -> list:
  registry.register_all()
  return sorted((entry for _, entry in gin.config._REGISTRY.items() if entry.module != _GIN_INTERNAL),
                key=lambda entry: (entry.module, entry.name))


def _summary(wrapped) -> str:
  doc = inspect.getdoc(wrapped) or ""
  return doc.splitlines()[0] if doc else ""


def list_configurables() -> str:
  """One line per configurable, grouped by module: `Name  first docstring line`."""
  lines, module = [], None
  entries = _entries()
  width = max(len(entry.name) for entry in entries)
  for entry in entries:
    if entry.module != module:
      module = entry.module
      lines.append(f"{'' if not lines else chr(10)}{module}:")
    lines.append(f"  {entry.name:<{width}}  {_summary(entry.wrapped)}")
  return "\n".join(lines)


class UnknownConfigurableError(KeyError):
  """`--describe` was given a name no configurable has."""

  def __str__(self) -> str:
    return str(self.args[0])


def names() -> list[str]:
  """Every configurable's name, sorted."""
  return sorted({entry.name for entry in _entries()})


def closest(name: str, candidates: Sequence[str], n: int = 3) -> list[str]:
  """The `candidates` closest to `name`, ignoring case, best first (difflib's similarity)."""
  by_key: dict[str, str] = {}
  for candidate in candidates:
    by_key.setdefault(candidate.lower(), candidate)
  return [by_key[key] for key in difflib.get_close_matches(name.lower(), list(by_key), n=n)]


def _parameters(wrapped) -> list[str]:
  try:
    return [p.name for p in inspect.signature(wrapped).parameters.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
  except (TypeError, ValueError):  # a builtin without an introspectable signature
    return []


def describe(name: str) -> str:
  """`name`'s selector, signature (defaults, `REQUIRED` where gin needs a binding) and docstring.

  `name` is a configurable's name or selector, or `Name.parameter` (a binding's left side), which
  describes `Name`.
  """
  entries = _entries()
  matches = [entry for entry in entries if name in (entry.name, entry.selector)]
  if not matches and "." in name:  # `L2.scale`: the configurable it binds, if it has that parameter
    owner, parameter = name.rsplit(".", 1)
    matches = [entry for entry in entries
               if owner in (entry.name, entry.selector) and parameter in _parameters(entry.wrapped)]
  if len(matches) != 1:
    if matches:
      raise UnknownConfigurableError(f"{name!r} is ambiguous: " + ", ".join(e.selector for e in matches))
    raise UnknownConfigurableError(f"no configurable named {name!r}{_suggestion(name, entries)}")
  entry = matches[0]
  try:
    parameters = inspect.signature(entry.wrapped).parameters.values()
    call = "\n".join([f"{entry.name}(", *(f"    {_parameter(p)}," for p in parameters), ")"])
  except (TypeError, ValueError):  # a builtin without an introspectable signature
    call = f"{entry.name}(...)"
  parts = [entry.selector, "", call]
  resume_safe = getattr(entry.wrapped, "RESUME_SAFE", ())
  if resume_safe:
    parts += ["", f"Safe to change on resume: {', '.join(resume_safe)}"]
  doc = inspect.getdoc(entry.wrapped)
  if doc:
    parts += ["", doc]
  return "\n".join(parts)


def _suggestion(name: str, entries: list) -> str:
  """`; did you mean L2.scale, L1.scale, L2?`: the closest names (case ignored), else the closest
  `Name.parameter` bindings, and the configurable whose name starts the query (`L2scale` -> `L2`)."""
  known = sorted({entry.name for entry in entries})
  close = closest(name, known) or closest(name, sorted({f"{entry.name}.{parameter}" for entry in entries
                                                        for parameter in _parameters(entry.wrapped)}))
  prefixes = sorted((n for n in known if len(n) >= 2 and name.lower().startswith(n.lower())), key=len)[-1:]
  close += [prefix for prefix in prefixes if prefix not in close]
  return f"; did you mean {', '.join(close)}?" if close else " (see --list_configurables)"


def _parameter(parameter: inspect.Parameter) -> str:
  """`name: annotation = default`, with gin's spelling of defaults: REQUIRED, `@factory`."""
  text = parameter.name
  if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
    text = "*" + text
  elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
    text = "**" + text
  if parameter.annotation is not inspect.Parameter.empty:
    annotation = parameter.annotation
    text += f": {annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)}"
  default = parameter.default
  if default is inspect.Parameter.empty:
    return text
  if default is gin.REQUIRED:
    shown = "REQUIRED"
  elif callable(default) and hasattr(default, "__name__"):
    shown = f"@{default.__name__}"
  else:
    shown = repr(default)
  return f"{text} = {shown}"
