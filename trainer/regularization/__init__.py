"""Regularization terms, structural variable selector, exactly-once distributed updates, tfa optimizers.

The public face: the four roles a term can play (`LossTerm`, `UpdateTerm`, `BatchTransform`,
`GradientEstimator`, see `trainer.regularization.terms`), the built-in terms, and the selector. A new
term subclasses one role in its own module and is registered in `trainer/config/registry.py`.
"""

from trainer.regularization.mixing import CutMix, Mixup
from trainer.regularization.selectors import VariableSelector
from trainer.regularization.sharpness_aware import SAM
from trainer.regularization.terms import (
    L1,
    L2,
    BatchTransform,
    DecoupledWeightDecay,
    GradientEstimator,
    GradientPass,
    LossTerm,
    ProximalL1,
    Roles,
    UpdateTerm,
    by_role,
)

__all__ = [
    "BatchTransform",
    "CutMix",
    "DecoupledWeightDecay",
    "GradientEstimator",
    "GradientPass",
    "L1",
    "L2",
    "LossTerm",
    "Mixup",
    "ProximalL1",
    "Roles",
    "SAM",
    "UpdateTerm",
    "VariableSelector",
    "by_role",
]
