"""Assign new values to variables exactly once per call, from any `tf.distribute` context.

Update terms (decoupled decay, proximal steps) run inside `strategy.run` next to the optimizer.
There, assigning to a `MirroredVariable` fails, and assigning per replica would apply the update
once per replica. The `tf.distribute` recipe, also used by Keras optimizers for `weight_decay`, is
to leave replica context with `merge_call` and let `strategy.extended.update` run the update once
on every component of each variable. In cross-replica context (e.g. under `strategy.scope()`,
outside `strategy.run`) the update is issued directly; the default strategy needs nothing special.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import tensorflow as tf

from trainer.runtime import compat

# (current value as float32, *args) -> new value as float32.
Rule = Callable[..., tf.Tensor]


def assign_once(updates: Sequence[tuple[object, Rule]], args: Sequence[tf.Tensor] = ()) -> None:
  """For each `(variable, rule)`, assigns `rule(value, *args)` to the variable, once.

  `args` are tensors computed in the replica function (e.g. the learning rate); each variable
  component is updated with its own replica's value. The rule sees the value in float32 whatever the
  variable's dtype (bfloat16/float16 variables are updated in float32 and rounded once).
  Traceable inside `tf.function`.
  """
  variables = [(compat.tf_variable(variable), rule) for variable, rule in updates]

  def merge_fn(strategy, *merged_args):
    for variable, rule in variables:
      strategy.extended.update(variable, functools.partial(_assign, rule=rule), args=merged_args)

  if tf.distribute.in_cross_replica_context():
    merge_fn(tf.distribute.get_strategy(), *args)
  else:
    tf.distribute.get_replica_context().merge_call(merge_fn, args=tuple(args))


def assign_values(variables: Sequence, values: Sequence[tf.Tensor]) -> None:
  """Assigns `values[i]` (computed in the replica function) to `variables[i]`, once, in one `merge_call`.

  Each variable component gets its own replica's value, so replicas may hold different values until
  the next assignment (SAM's per-replica perturbation relies on this). Values are cast to the
  variable's dtype. Traceable inside `tf.function`.
  """
  targets = [compat.tf_variable(variable) for variable in variables]

  def merge_fn(strategy, *merged_values):
    for variable, value in zip(targets, merged_values):
      strategy.extended.update(variable, _assign_value, args=(value,))

  if tf.distribute.in_cross_replica_context():
    merge_fn(tf.distribute.get_strategy(), *values)
  else:
    tf.distribute.get_replica_context().merge_call(merge_fn, args=tuple(values))


def _assign_value(variable: tf.Variable, value: tf.Tensor) -> tf.Operation:
  return variable.assign(tf.cast(value, variable.dtype))


def _assign(variable: tf.Variable, *args, rule: Rule) -> tf.Operation:
  new_value = rule(tf.cast(variable, tf.float32), *args)
  return variable.assign(tf.cast(new_value, variable.dtype))
