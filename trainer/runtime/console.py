"""A quiet console: TensorFlow's start-up and routine chatter stay off it unless `--verbosity >= 1`.

Researchers read Occam's own lines (the data, the terms, one line per loop, the final block); the
libraries' INFO lines (oneDNN and CUDA stubs at import, `Sharding callback duration` per
checkpoint, SavedModel export steps, gin's `resource_reader` per config file) hide them. Their
warnings and errors always pass.
"""

from __future__ import annotations

import logging as python_logging  # absl.logging's WARNING is absl's level (-1), not Python's
import os
import sys
import tempfile

from absl import logging


def quiet(*, verbose: bool) -> None:
  """Keeps TensorFlow's start-up and routine chatter off the console unless `--verbosity >= 1`.

  Before TensorFlow is imported: TF_CPP_MIN_LOG_LEVEL=3 unless the user set it (TF <= 2.15 logs its
  native messages through it), and fd 2 goes to a temporary file during the import, where TF 2.16+
  prints absl's pre-initialization block (oneDNN, CUDA stubs) that no setting reaches; the captured
  text is replayed if the import fails. Afterwards, the libraries' INFO lines through absl
  (`Sharding callback duration` per checkpoint, SavedModel export) are dropped; their warnings stay.
  """
  if verbose or "tensorflow" in sys.modules:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with tempfile.TemporaryFile() as captured:
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # noqa: F401  (imported for its side effects, quietly)
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)
  logging.get_absl_handler().python_handler.addFilter(LibraryInfoFilter())


class LibraryInfoFilter:
  """A logging filter that drops INFO and below logged from TensorFlow's, Keras', TensorBoard's and gin's
  files."""

  _LIBRARIES = ("tensorflow", "keras", "tf_keras", "tensorboard", "gin")  # gin: each file it opens

  def filter(self, record) -> bool:
    if record.levelno >= python_logging.WARNING:
      return True
    parts = record.pathname.split(os.sep)
    return not ("site-packages" in parts and any(library in parts for library in self._LIBRARIES))
