"""Error messages stay readable: a value echoed in a message is shortened when it is huge.

A message names its culprit by echoing it (`--gin_bindings='Trainer.train_steps=...'`, `got '...'`),
and a culprit can be a 100,000-character value pasted by mistake. `cap` shortens every such run of
non-blank characters to its start and end and says how long it was, so the message stays one readable
line while the rest of it (what to fix) is kept whole.
"""

from __future__ import annotations

import re

LONGEST_WORD = 200  # characters of one run of non-blank characters shown whole
_KEPT_HEAD, _KEPT_TAIL = 120, 40


def cap(text: str, *, longest: int = LONGEST_WORD) -> str:
  """`text` with each run of more than `longest` non-blank characters cut in its middle, e.g.
  `'xxxx...[99,840 more characters]...xxxx'`."""
  def shorten(match: re.Match) -> str:
    word = match.group(0)
    hidden = len(word) - _KEPT_HEAD - _KEPT_TAIL
    return f"{word[:_KEPT_HEAD]}...[{hidden:,} more characters]...{word[-_KEPT_TAIL:]}"

  return re.sub(rf"\S{{{longest + 1},}}", shorten, text)
