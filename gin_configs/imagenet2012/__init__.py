"""ImageNet (ILSVRC 2012) recipes with published hyperparameters (a package so gin resolves them)."""
