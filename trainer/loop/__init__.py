"""The training loop: the gin root (`Trainer`), run builder, controller and its actions, compiled programs.

The public face: the settings (`Trainer`, `RunConfig`), the builder (`build` -> `Run`,
`open_checkpointers`), the runners the Controller drives, and the actions that plug behaviour into it
(`Action`: `action(step, scalars)`; `KeepBest`, `NonFiniteRecovery`, early stopping's `EarlyStopping`).
"""

from trainer.loop.builder import Checkpointers, Run, build, open_checkpointers
from trainer.loop.controller import Action, Controller
from trainer.loop.early_stopping import EarlyStopping, KeepBest
from trainer.loop.recovery import NonFiniteRecovery
from trainer.loop.runners import EvalRunner, TrainRunner
from trainer.loop.settings import RunConfig, Trainer

__all__ = [
    "Action",
    "Checkpointers",
    "Controller",
    "EarlyStopping",
    "EvalRunner",
    "KeepBest",
    "NonFiniteRecovery",
    "Run",
    "RunConfig",
    "TrainRunner",
    "Trainer",
    "build",
    "open_checkpointers",
]
