"""CIFAR-10 recipes with published hyperparameters (a package so gin resolves them)."""
