"""What a run reports: the tag registry, the loop-boundary monitor, weight statistics, sharpness, HParams, event writers and readers."""
