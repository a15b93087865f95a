"""Update terms log what they add to the objective (`penalty/<term>`), which `train/loss` cannot contain."""

from __future__ import annotations

import numpy as np
import pytest

from tests import helpers


def test_update_terms_log_their_objective_value_from_the_final_weights(tmp_path):
  bindings = [*helpers.FAST, "Trainer.regularizers=[@ProximalL1(), @DecoupledWeightDecay()]",
              "ProximalL1.scale=1e-3", "DecoupledWeightDecay.rate=0.02",
              "DecoupledWeightDecay.convention='schedule_multiplier'"]
  run, results = helpers.train_in_process(str(tmp_path), bindings)
  kernels = [k.astype(np.float64) for k in helpers.kernel_arrays(run)]  # what both terms select
  # ProximalL1 minimizes data loss + scale * sum|w|: the nonsmooth part, read at the loop's end.
  assert results["penalty/proximal_l1"] == pytest.approx(1e-3 * sum(np.abs(k).sum() for k in kernels),
                                                         rel=1e-5)
  # Decoupled decay: the L2 whose plain-SGD step is the decay, rate / (2 lr_0) * sum(w^2).
  base = run.schedule.base_learning_rate
  assert results["penalty/weight_decay"] == pytest.approx(
      0.02 / (2 * base) * sum((k ** 2).sum() for k in kernels), rel=1e-5)
  # Neither is differentiated: train/loss is still the data loss plus the loss terms (none here).
  assert results["penalty/total"] == 0.0
  assert results["train/loss"] == pytest.approx(results["train/data_loss"], rel=1e-6)
  written = helpers.read_scalars(str(tmp_path / "train"))
  assert [step for step, _ in written["penalty/proximal_l1"]] == [50, 100, 150, 200]
