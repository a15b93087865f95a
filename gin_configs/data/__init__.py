"""Shipped data configs: TFDS datasets by name, with their splits and standard preprocessing."""
