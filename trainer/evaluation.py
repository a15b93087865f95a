"""Evaluate a trained run's checkpoint on one split, without training and without writing anything.

>>> import trainer
>>> trainer.evaluate("/tmp/occam/quickstart", checkpoint="best", split="test")   # doctest: +SKIP
Evaluation(checkpoint='/tmp/occam/quickstart/best/ckpt-1500', step=1500, metrics={'test/accuracy': ...})

From the command line (prints the same record as JSON; bad input exits with status 2):

    python -m trainer.evaluation --model_dir=/tmp/occam/quickstart --checkpoint=best --split=test

The run is rebuilt from the config it recorded (`model_dir/config.gin`), plus any bindings given
(e.g. a larger `Trainer.eval_batch_size`, which changes no metric), and the chosen checkpoint is
restored read-only: 'latest' is the newest readable one of `model_dir/checkpoints` (the weights a
finished run's final `eval/*` and `test/*` were computed with), 'best' the one early stopping kept in
`model_dir/best` (its `best/test/*`). The split is 'eval' (validation) or 'test'; the metrics are the
ones training reports for it, computed by the same evaluation program. `weights` names which weights of
the checkpoint: 'raw' (the trained ones) or a weight average the run keeps (`ema`, `swa`: the name of an
`@EMA()`/`@SWA()` term; its `<name>/test/*`), from the latest checkpoint only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Sequence

import tensorflow as tf

from trainer import api
from trainer.config import guard, parsing, registry
from trainer.loop import builder, runners
from trainer.loop.settings import Trainer
from trainer.runtime import checkpointing
from trainer.runtime import strategy as strategy_lib

CHECKPOINTS = ("latest", "best")
SPLITS = ("eval", "test")


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What `evaluate` returns: the checkpoint restored, its step, and `<split>/<metric>` values."""

  checkpoint: str
  step: int
  metrics: dict[str, float]


def evaluate(model_dir: str, *, checkpoint: str = "latest", split: str = "test", bindings: Sequence[str] = (),
             strategy: str | tf.distribute.Strategy = "default", tpu: str | None = None,
             weights: str = "raw") -> Evaluation:
  """Evaluates `model_dir`'s latest or best checkpoint on `split` ('eval' or 'test').

  Raises:
    api.InvalidRunError: a bad argument, a directory without a recorded config or without such a
      checkpoint, or a checkpoint that does not fit the recorded config; nothing was written.
  """
  try:
    return _evaluate(model_dir, checkpoint=checkpoint, split=split, bindings=bindings, strategy=strategy,
                     tpu=tpu, weights=weights)
  except (parsing.ConfigError, checkpointing.ResumeError, ValueError, TypeError) as error:
    raise api.InvalidRunError(str(error)) from error


def _evaluate(model_dir: str, *, checkpoint: str, split: str, bindings: Sequence[str],
              strategy: str | tf.distribute.Strategy, tpu: str | None, weights: str) -> Evaluation:
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f"--checkpoint={checkpoint!r} is not one of {CHECKPOINTS}")
  if split not in SPLITS:
    raise ValueError(f"--split={split!r} is not one of {SPLITS} ('eval' is the validation split)")
  model_dir = api.resolve_model_dir(model_dir)
  config = os.path.join(model_dir, guard.CONFIG_FILE)
  if not tf.io.gfile.exists(config):
    raise ValueError(f"--model_dir={model_dir} holds no {guard.CONFIG_FILE}: not the directory of a run "
                     "that started training")
  registry.register_all()
  parsing.parse([config], bindings)
  if isinstance(strategy, str):
    strategy = strategy_lib.create(strategy, tpu=tpu)
  run = builder.build(Trainer(), strategy=strategy, model_dir=model_dir,
                      is_chief=strategy_lib.worker_role(strategy).is_chief)
  averages = {state.spec.name: state for state in run.averages}
  if weights != "raw" and (weights not in averages or checkpoint != "latest"):
    raise ValueError(f"--weights={weights!r}: the {checkpoint} checkpoint holds "
                     f"{['raw', *averages] if checkpoint == 'latest' else ['raw']} (averages are kept in the "
                     "latest checkpoint only)")
  checkpointers = builder.open_checkpointers(run)
  try:
    chosen = checkpointers.latest if checkpoint == "latest" else checkpointers.best
    path = chosen.restore_latest()
    if path is None:
      hint = " (best checkpoints come from Trainer.early_stopping)" if checkpoint == "best" else ""
      raise ValueError(f"--model_dir={model_dir}: no {checkpoint} checkpoint in {chosen.directory}{hint}")
    evaluator = runners.EvalRunner(program=run.eval_program, inputs=run.eval_inputs)
    if weights == "raw":
      return Evaluation(checkpoint=path, step=int(run.step.numpy()), metrics=evaluator.evaluate([split]))
    if not averages[weights].ready:  # SWA before its first snapshot: the model's initial weights
      raise ValueError(f"--weights={weights!r}: {path} (step {int(run.step.numpy())}) holds no averaged "
                       "weights yet (the run stopped before the average's first snapshot)")
    with averages[weights].swapped_in():
      metrics = evaluator.evaluate([split])
    return Evaluation(checkpoint=path, step=int(run.step.numpy()),
                      metrics={f"{weights}/{tag}": value for tag, value in metrics.items()})
  finally:
    checkpointers.close()


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m trainer.evaluation`: prints the `Evaluation` as JSON; exit status 2 on bad input."""
  parser = argparse.ArgumentParser(prog="python -m trainer.evaluation", description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True, help="the run's directory (as given to training)")
  parser.add_argument("--checkpoint", default="latest", choices=CHECKPOINTS)
  parser.add_argument("--split", default="test", choices=SPLITS, help="'eval' is the validation split")
  parser.add_argument("--weights", default="raw",
                      help="'raw', or the name of a weight average the run keeps (e.g. 'ema', 'swa')")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="bindings applied after the run's config.gin (repeatable)")
  parser.add_argument("--strategy", default="default", help="distribution strategy name, as for training")
  parser.add_argument("--tpu", default=None)
  arguments = parser.parse_args(argv)
  try:
    result = evaluate(arguments.model_dir, checkpoint=arguments.checkpoint, split=arguments.split,
                      bindings=arguments.gin_bindings, strategy=arguments.strategy, tpu=arguments.tpu,
                      weights=arguments.weights)
  except (api.InvalidRunError, strategy_lib.StrategyError) as error:
    print(f"occam-evaluate: error: {error}", file=sys.stderr)
    return 2
  print(json.dumps(dataclasses.asdict(result), indent=2, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
