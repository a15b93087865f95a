"""What a run reports: tag registry, loop-boundary monitor, weight stats, sharpness, HParams, event I/O.

The public face: the tag registry (`Tag`, `find`: a new tag is one `Tag` entry in
`trainer/metrics/tags.py`) and the `Monitor`. The Monitor is imported on first use: it needs
TensorFlow, which the readers of the tag registry (`occam-report`) never import.
"""

from trainer.metrics.tags import Tag, find

__all__ = ["Monitor", "Tag", "find"]


def __getattr__(name: str):
  if name == "Monitor":
    from trainer.metrics.monitor import Monitor
    return Monitor
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
