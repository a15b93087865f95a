"""The resume guard's derived rules: declared RESUME_SAFE parameters, and defaults that are not changes."""

from __future__ import annotations

from trainer.config import guard


def test_safe_parameters_are_collected_from_the_configurables_declarations():
  safe = guard.safe_to_change()
  assert {"Trainer.train_steps", "Trainer.eval_every", "Monitor.*", "EarlyStopping.patience"} <= set(safe)
  assert not {"Trainer.batch_size", "Trainer.model", "L2.scale", "EarlyStopping.metric"} & set(safe)


def test_a_binding_that_states_the_default_is_not_a_change():
  old = ("Trainer.model = @MLP\nTrainer.batch_size = 64\nTrainer.loss = @softmax_cross_entropy\n"
         "MLP.num_outputs = 10")
  assert guard.unsafe_changes(old, "Trainer.model = @MLP") == []
  assert guard.unsafe_changes(old, "Trainer.model = @MLP\nTrainer.batch_size = 32") == [
      "- Trainer.batch_size = 64", "+ Trainer.batch_size = 32"]
  # A changed default-less binding, and a safe one, side by side.
  assert guard.unsafe_changes("Trainer.model = @MLP", "Trainer.model = @ResNet\nTrainer.train_steps = 9") == [
      "- Trainer.model = @MLP", "+ Trainer.model = @ResNet"]
