"""CIFAR-100 recipes with published hyperparameters (a package so gin resolves them)."""
