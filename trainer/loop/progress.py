"""A progress bar for `trainer.train` in Python: where a notebook user sees the run advance.

The command line logs one line per host loop; a program calling `trainer.train` has no log lines
(absl logs INFO only under `app.run`), so without this a notebook shows nothing for minutes. The bar
is one line, redrawn in place (`\\r`) in a terminal or a notebook, with the console's scalars of the
latest loop and evaluation and the ETA; where output goes to a file it prints one line per loop.
"""

from __future__ import annotations

import sys
from typing import Mapping, TextIO

from trainer.loop.controller import Eta, loop_summary
from trainer.metrics import tags

WIDTH = 20  # characters of the bar itself


class ProgressBar:
  """Train and eval action: draws `[#####-----] step: 500/1000 | loss: 0.31 | ... | eta: 12s`.

  Register it as both: it draws after a loop that does not evaluate, and after the evaluation of one
  that does (so an evaluating loop draws once, with its eval scalars). `close()` ends the line.
  """

  def __init__(self, *, train_steps: int, eval_every: int, stream: TextIO | None = None):
    self._train_steps, self._eval_every = train_steps, eval_every
    self._stream = stream or sys.stdout
    self._eta = Eta(train_steps)
    self._shown: dict[str, float] = {}
    self._last_step: int | None = None
    self._eta_text = "n/a"
    self._width = 0  # of the line drawn last, to blank what a shorter line leaves over
    isatty = getattr(self._stream, "isatty", lambda: False)
    self._in_place = isatty() or "ipykernel" in sys.modules

  def __call__(self, step: int, scalars: Mapping[str, float]) -> None:
    self._shown.update({key: scalars[key] for key in (*tags.console(), "perf/steps_per_sec")
                        if key in scalars})
    if step != self._last_step:  # the first call of a loop: its train scalars
      self._last_step, self._eta_text = step, self._eta.update(step)
      if step % self._eval_every == 0 or step == self._train_steps:
        return  # drawn by the evaluation's call, with its scalars
    self._draw(step)

  def _draw(self, step: int) -> None:
    filled = WIDTH * step // max(self._train_steps, 1)
    line = (f"[{'#' * filled}{'-' * (WIDTH - filled)}] "
            f"{loop_summary(step, self._train_steps, self._shown, self._eta_text)}")
    if self._in_place:
      self._stream.write("\r" + line.ljust(self._width))
      self._width = len(line)
    else:
      self._stream.write(line + "\n")
    self._stream.flush()

  def close(self) -> None:
    """Ends the line drawn in place, so that what is printed next starts on its own line."""
    if self._in_place and self._width:
      self._stream.write("\n")
      self._stream.flush()
      self._width = 0
