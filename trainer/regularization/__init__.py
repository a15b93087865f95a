"""Regularization terms, structural variable selector, exactly-once distributed updates, tfa optimizers.

The public face: the five roles a term can play (`LossTerm`, `UpdateTerm`, `BatchTransform`,
`GradientEstimator`, `WeightAverage`, see `trainer.regularization.terms`), the built-in terms, and the
selector. A new term subclasses one role in its own module and is registered in `trainer/config/registry.py`.
"""

from trainer.regularization.averaging import EMA, SWA
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
    WeightAverage,
    by_role,
)

__all__ = [
    "BatchTransform",
    "CutMix",
    "DecoupledWeightDecay",
    "EMA",
    "GradientEstimator",
    "GradientPass",
    "L1",
    "L2",
    "LossTerm",
    "Mixup",
    "ProximalL1",
    "Roles",
    "SAM",
    "SWA",
    "UpdateTerm",
    "VariableSelector",
    "WeightAverage",
    "by_role",
]
