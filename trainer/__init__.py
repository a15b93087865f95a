"""Occam: a TensorFlow 2 training framework for regularization and generalization research."""

__version__ = "0.1.0"
