"""Regularization terms, the structural variable selector, exactly-once distributed updates, tfa optimizers."""
