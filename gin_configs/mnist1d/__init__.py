"""MNIST-1D baselines with the protocol of Greydanus & Kobak (ICML 2024) (a package so gin resolves them)."""
