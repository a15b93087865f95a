"""Regularization terms, structural variable selector, exactly-once distributed updates, tfa optimizers."""
