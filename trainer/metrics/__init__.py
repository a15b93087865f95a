"""What a run reports: tag registry, loop-boundary monitor, weight stats, sharpness, HParams, event I/O."""
