"""Distribution for real: 1/2/4 logical devices and two worker processes give the same training.

The CLI runs in fresh processes (a process can host only one MirroredStrategy size: TensorFlow's
collective keys are per process), on the quickstart MLP with every regularization term on.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from tests.helpers import (
  QUICKSTART,
  REPO,
  checkpoint_values,
  read_scalars,
  run_main,
  train_in_process,
)
from trainer.runtime import compat
from trainer.runtime import strategy as strategy_lib

STRENGTHS = ["L2.scale=1e-4", "L1.scale=1e-5", "DecoupledWeightDecay.rate=1e-2", "ProximalL1.scale=1e-4",
             "SAM.rho=0.05"]
PENALTIES = ["Trainer.regularizers=[@L2(), @L1(), @DecoupledWeightDecay(), @ProximalL1()]", *STRENGTHS]
# Every term whose semantics are replica-invariant: the penalties and decays, SAM with its default global
# perturbation, label smoothing. (Mixup and CutMix mix within each replica's batch: not invariant.)
TERMS = ["Trainer.regularizers=[@L2(), @L1(), @DecoupledWeightDecay(), @ProximalL1(), @SAM()]", *STRENGTHS,
         "softmax_cross_entropy.label_smoothing=0.1"]
EVERY_TERM = TERMS + ["Trainer.train_steps=60", "Trainer.steps_per_loop=20", "Trainer.eval_every=60",
                      "Trainer.checkpoint_every=60", "Trainer.batch_size=64"]


def _args(model_dir: str, *extra: str) -> list[str]:
  return ([f"--gin_file={QUICKSTART}", f"--model_dir={model_dir}", *extra]
          + [f"--gin_bindings={b}" for b in EVERY_TERM])


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _start(command: list[str], env: dict) -> subprocess.Popen:
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _start_two_workers(model_dir: str, scratch_root: str) -> list[subprocess.Popen]:
  """Two `trainer.main` worker processes on localhost, wired together by TF_CONFIG."""
  addresses = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
  workers = []
  for index in range(2):
    tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TMPDIR=scratch_root, PYTHONPATH=REPO,
               TF_CPP_MIN_LOG_LEVEL="2")
    workers.append(_start([sys.executable, "-m", "trainer.main",
                           *_args(model_dir, "--strategy=multi_worker_mirrored")], env))
  return workers


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
  output, _ = process.communicate(timeout=600)  # a hang bound
  return subprocess.CompletedProcess(process.args, process.returncode, output)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same run on 1 device, 2 and 4 replicas and 2 workers. 4 replicas and the workers need processes
  of their own (one MirroredStrategy size per process): they run while this process trains the 1-device
  run and the 2-replica one (the session's `mirrored(2)`) through the API."""
  root = tmp_path_factory.mktemp("distribution")
  scratch = root / "scratch"
  scratch.mkdir()
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  four = _start([sys.executable, "-m", "trainer.main",
                 *_args(str(root / "four"), "--strategy=mirrored", "--virtual_devices=4")], env)
  workers = _start_two_workers(str(root / "workers"), str(scratch))
  try:
    train_in_process(str(root / "one"), EVERY_TERM)
    train_in_process(str(root / "two"), EVERY_TERM, strategy=mirrored(2))
  finally:
    outcomes = {"4": _finish(four), "workers": [_finish(worker) for worker in workers]}
  for name, outcome in outcomes.items():
    for process in outcome if isinstance(outcome, list) else [outcome]:
      assert process.returncode == 0, f"{name}: {process.stdout[-3000:]}"
  dirs = {"1": root / "one", "2": root / "two", "4": root / "four", "workers": root / "workers"}
  return {name: str(path) for name, path in dirs.items()}, outcomes, scratch


@pytest.mark.slow  # the `runs` fixture: 2 runs in process while 3 processes train, ~30 s
@pytest.mark.multiprocess
@pytest.mark.parametrize("replicas", ["2", "4", "workers"])
def test_weights_and_optimizer_state_are_replica_invariant_with_every_term_on(runs, replicas):
  dirs, _, _ = runs
  expected, got = checkpoint_values(dirs["1"]), checkpoint_values(dirs[replicas])
  assert expected.keys() == got.keys() and len(expected) >= 6
  for key in expected:
    np.testing.assert_allclose(got[key], expected[key], atol=1e-5, rtol=0, err_msg=key)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("replicas", ["2", "4", "workers"])
def test_penalties_and_losses_in_tensorboard_are_replica_invariant(runs, replicas):
  dirs, _, _ = runs
  expected = read_scalars(os.path.join(dirs["1"], "train"))
  got = read_scalars(os.path.join(dirs[replicas], "train"))
  for tag in ("train/loss", "train/data_loss", "penalty/l2", "penalty/l1", "penalty/total",
              "sharpness/sam_train"):
    assert [s for s, _ in got[tag]] == [s for s, _ in expected[tag]], tag
    np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in expected[tag]], rtol=1e-5,
                               err_msg=tag)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("replicas", ["2", "4", "workers"])
def test_evaluation_is_exact_whichever_replicas_and_workers_share_it(runs, replicas):
  """Each worker evaluates only its slice of every padded global batch; the weighted sums add up to
  the single device's `eval/*` and `test/*`."""
  dirs, _, _ = runs
  expected = read_scalars(os.path.join(dirs["1"], "eval"))
  got = read_scalars(os.path.join(dirs[replicas], "eval"))
  for tag in ("eval/loss", "eval/accuracy", "test/loss", "test/accuracy"):
    np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in expected[tag]], rtol=1e-5,
                               err_msg=tag)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_only_the_chief_writes_and_the_worker_scratch_is_removed(runs):
  dirs, outcomes, scratch = runs
  assert "worker: worker 0 (chief)" in outcomes["workers"][0].stdout
  assert "worker: worker 1" in outcomes["workers"][1].stdout
  event_files = glob.glob(os.path.join(dirs["workers"], "train", "events.out.tfevents.*"))
  assert len(event_files) == 1  # one writer: the chief's
  assert os.path.exists(os.path.join(dirs["workers"], "operative_config.gin"))
  assert os.listdir(scratch) == []


@pytest.mark.slow
@pytest.mark.multiprocess
def test_strategy_and_replicas_are_logged(runs):
  _, outcomes, _ = runs
  assert "strategy: MirroredStrategy | replicas: 4" in outcomes["4"].stdout
  assert "replicas: 2" in outcomes["workers"][0].stdout


def test_checkpoint_from_a_mirrored_run_resumes_on_a_single_device(tmp_path):
  """Checkpoints do not depend on the strategy: what a TPU/GPU job writes, a CPU job can read."""
  bindings = PENALTIES + ["Trainer.train_steps=20", "Trainer.steps_per_loop=10",
                          "Trainer.checkpoint_every=10"]
  train_in_process(str(tmp_path), bindings, strategy=mirrored(2))
  trainer, _ = train_in_process(str(tmp_path),
                                bindings[:-3] + ["Trainer.train_steps=30", "Trainer.steps_per_loop=10"])
  assert int(trainer.step.numpy()) == 30


@pytest.mark.slow
# Each model in bfloat16 (the TPU's precision) and the float32 step once: a ResNet in float32 would only
# repeat an XLA compilation of ~30 s that proves nothing the other three do not.
@pytest.mark.parametrize("model, precision", [("@MLP", "'mixed_bfloat16'"), ("@ResNet", "'mixed_bfloat16'"),
                                              ("@MLP", "None")])
def test_full_train_step_compiles_with_xla_for_each_model_and_term(tmp_path, model, precision):
  """TPU proxy: with jit_compile the whole replica step (every penalty and decay, bfloat16) compiles
  and trains. (SAM and Mixup under XLA: tests/test_sharpness_aware.py.)"""
  bindings = PENALTIES + [f"Trainer.model={model}", f"Trainer.mixed_precision={precision}",
                          "Trainer.jit_compile=True", "Trainer.train_steps=10", "Trainer.steps_per_loop=10"]
  trainer, results = train_in_process(str(tmp_path), bindings)
  assert np.isfinite(results["train/loss"]) and results["penalty/l2"] > 0
  if precision != "None":
    assert trainer.model.layers[-1].compute_dtype == "bfloat16"
    assert all(v.dtype == tf.float32 for v in trainer.model.trainable_variables)


def test_mixed_float16_trains_with_loss_scaling(tmp_path):
  bindings = TERMS + ["Trainer.mixed_precision='mixed_float16'", "Trainer.train_steps=20",
                               "Trainer.steps_per_loop=10"]
  trainer, results = train_in_process(str(tmp_path), bindings)
  assert "LossScale" in type(trainer.optimizer).__name__
  assert np.isfinite(results["train/loss"])


NO_GPU = not tf.config.list_physical_devices("GPU")


@pytest.mark.multiprocess
def test_a_missing_tpu_or_gpu_is_refused_fast_with_a_clear_message(tmp_path):
  """`--strategy=tpu` without a TPU fails fast; `--strategy=mirrored` with no GPU and an unsplit CPU (an
  install that would lose its accelerator silently) is refused and writes nothing.

  "Fast" is compared with this machine's own start-up (TensorFlow's import, gin), measured side by side by
  the mirrored command, refused at the same point (the strategy's creation): an absolute bound would
  measure the machine's load instead. With a GPU visible, Mirrored uses it: an unknown strategy is then the
  reference, refused at the same point.
  """
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  reference_strategy = "mirrored" if NO_GPU else "no_such_strategy"
  started = time.monotonic()
  tpu, reference = (_start([sys.executable, "-m", "trainer.main", f"--gin_file={QUICKSTART}",
                            f"--model_dir={tmp_path / name}", f"--strategy={name}"], env)
                    for name in ("tpu", reference_strategy))
  seconds = {}  # each process's own run time (both print little: their pipes cannot fill up)
  while len(seconds) < 2:
    assert time.monotonic() - started < 600, "a hang bound"
    for name, process in (("tpu", tpu), ("reference", reference)):
      if name not in seconds and process.poll() is not None:
        seconds[name] = time.monotonic() - started
    time.sleep(0.05)
  outcome, reference = _finish(tpu), _finish(reference)
  assert outcome.returncode == 2
  assert "--strategy=tpu --tpu=local: no usable TPU" in outcome.stdout
  assert reference.returncode == 2, reference.stdout[-3000:]
  if NO_GPU:
    assert "--strategy=mirrored: TensorFlow sees no GPU" in reference.stdout
    assert "--virtual_devices=N" in reference.stdout and "'.[gpu]'" in reference.stdout
  else:
    assert "no_such_strategy" in reference.stdout, reference.stdout[-2000:]
  assert "Traceback" not in outcome.stdout + reference.stdout
  assert not os.path.exists(tmp_path / reference_strategy)  # nothing written
  assert seconds["tpu"] - seconds["reference"] < 30, seconds


def test_unreachable_tpu_address_fails_fast():
  with socket.socket() as bound:  # bound but not listening, for the whole test: a connection is refused
    bound.bind(("127.0.0.1", 0))
    port = bound.getsockname()[1]
    with pytest.raises(strategy_lib.StrategyError, match=f"--tpu=grpc://127.0.0.1:{port}: cannot reach"):
      strategy_lib.create("tpu", tpu=f"grpc://127.0.0.1:{port}")


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {}}', "non-empty 'cluster'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "must name a job"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "out of range"),
])
def test_malformed_tf_config_is_explained(monkeypatch, tf_config, message):
  monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(strategy_lib.StrategyError, match=message):
    strategy_lib.create("multi_worker_mirrored")


def test_tpu_flag_without_tpu_strategy_is_refused(tmp_path, capsys):
  assert run_main([f"--gin_file={QUICKSTART}", "--tpu=local", f"--model_dir={tmp_path}"]) == 2
  assert "--tpu=local is only used with --strategy=tpu" in capsys.readouterr().err


def test_an_eval_batch_that_does_not_divide_the_replicas_gives_the_single_device_metrics(tmp_path):
  """Trainer.eval_batch_size = 7 on 2 replicas runs as 8 per step (4 each); eval/* equal one device's."""
  bindings = ["Trainer.train_steps=20", "Trainer.steps_per_loop=10", "Trainer.eval_every=20",
              "Trainer.batch_size=32", "Trainer.eval_batch_size=7"]
  _, single = train_in_process(str(tmp_path / "one"), bindings)
  _, multi = train_in_process(str(tmp_path / "two"), bindings, strategy=mirrored(2))
  for tag in ("eval/loss", "eval/accuracy", "test/loss", "test/accuracy"):
    np.testing.assert_allclose(multi[tag], single[tag], rtol=1e-5, err_msg=tag)


@pytest.mark.slow
def test_synchronized_batch_norm_makes_the_resnet_replica_invariant(tmp_path):
  """Per-replica BatchNorm statistics differ from the global batch's; synchronized ones do not."""
  bindings = ["Trainer.model=@ResNet", "ResNet.synchronized_batch_norm=True", "Trainer.train_steps=10",
              "Trainer.steps_per_loop=10", "Trainer.regularizers=[@L2()]"]
  single, _ = train_in_process(str(tmp_path / "one"), bindings)
  multi, _ = train_in_process(str(tmp_path / "two"), bindings, strategy=mirrored(2))
  for expected, got in zip(single.model.variables, multi.model.variables):
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5, err_msg=expected.name)


@pytest.mark.skipif(not compat.IS_KERAS_3, reason="forces the overflow through Keras 3's "
                    "LossScaleOptimizer(initial_scale=...); Keras 2's loss-scale API differs")
def test_a_loss_scale_overflow_is_skipped_by_the_optimizer_and_the_decay_alike():
  """mixed_float16: an overflowing step is the loss scaler's to skip, not the non-finite guard's."""
  from models import MLP
  from trainer.data import digits
  from trainer.loop import losses, schedules
  from trainer.loop.programs import TrainProgram
  from trainer.regularization import terms as regularizers
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = MLP(hidden_sizes=(8,))
    model(tf.zeros((1, 8, 8, 1)))
    schedule = schedules.Scaled(schedules.Constant(0.1))
    optimizer = tf.keras.optimizers.LossScaleOptimizer(tf.keras.optimizers.SGD(learning_rate=schedule),
                                                       initial_scale=2.0**60)  # overflows float16 at once
    compat.build_optimizer(optimizer, model.trainable_variables)
    decay = regularizers.DecoupledWeightDecay(0.5)
    decay.bind(model)
    program = TrainProgram(strategy=tf.distribute.get_strategy(), model=model, optimizer=optimizer,
                           schedule=schedule, loss_fn=losses.softmax_cross_entropy, global_batch_size=8,
                           terms=regularizers.by_role([decay]), include_model_losses=False,
                           classification=True,
                           step=tf.Variable(0, dtype=tf.int64), seed=0)
    train = digits().train
    batches = iter(tf.data.Dataset.from_tensors((train.features[:8], train.labels[:8])).repeat())
    before = [v.numpy() for v in model.trainable_variables]
    assert int(program.loop(batches, tf.constant(1))) == -1 and program.guarded == ["data loss"]
    for value, variable in zip(before, model.trainable_variables):
      np.testing.assert_array_equal(variable.numpy(), value)  # neither the optimizer nor the decay moved it
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**59
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
