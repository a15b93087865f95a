"""What a run reports: tag registry, loop-boundary monitor, weight stats, sharpness, HParams, event I/O.

The public face: the tag registry (`Tag`, `find`: a new tag is one `Tag` entry in
`trainer/metrics/tags.py`) and the `Monitor`.
"""

from trainer.metrics.monitor import Monitor
from trainer.metrics.tags import Tag, find

__all__ = ["Monitor", "Tag", "find"]
