"""Experiments over many runs: grid sweeps, their reports, and pandas loaders of their scalars."""
