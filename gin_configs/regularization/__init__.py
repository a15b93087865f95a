"""Shipped gin configs, one per regularization term."""
