"""The quickstart as a plain Keras `fit` program: the startup benchmark's reference child process.

    python -m trainer.benchmarks.fit_quickstart

The same data (the digits train split), model factory, L2 on the kernels, Adam on warmup + cosine and
batch size as gin_configs/quickstart.gin, two steps. It prints a marker after its imports, after
`compile` and when the first step has finished (read back through the step counter): the phases
`trainer.benchmarks.startup` times (`MARKERS`).
"""

import tensorflow as tf

import models
from trainer.data.digits import digits

MARKERS = ("startup | imported", "startup | built", "startup | first step")


class _FirstStep(tf.keras.callbacks.Callback):
  def on_train_batch_end(self, batch, logs=None):
    if batch == 0 and int(self.model.optimizer.iterations) == 1:
      print(MARKERS[2], flush=True)


def main() -> None:
  print(MARKERS[0], flush=True)
  train = digits().train
  dataset = (tf.data.Dataset.from_tensor_slices((train.features, train.labels))
             .shuffle(len(train.labels), seed=0).repeat().batch(64, drop_remainder=True))
  tf.keras.utils.set_random_seed(0)
  model = models.MLP(hidden_sizes=(128, 128), kernel_regularizer=tf.keras.regularizers.L2(1e-4))
  schedule = tf.keras.optimizers.schedules.CosineDecay(0.0, 2000, warmup_target=3e-3, warmup_steps=100)
  model.compile(optimizer=tf.keras.optimizers.Adam(schedule), metrics=["accuracy"],
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  print(MARKERS[1], flush=True)
  model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[_FirstStep()])


if __name__ == "__main__":
  main()
