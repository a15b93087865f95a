"""Configs of the regularization experiments in docs/EXPERIMENTS.md (a package so gin resolves them)."""
