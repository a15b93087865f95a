"""From the `--strategy`/`--tpu` flags to a `tf.distribute.Strategy`, logged so the user can trust it.

Every failure here happens before training and names its cause: an unknown strategy, `--tpu`
without `--strategy=tpu`, a malformed `TF_CONFIG`, a worker that does not come up within
`--cluster_timeout`, or a TPU that is not there (checked quickly instead of letting TensorFlow wait
forever on an unreachable address).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import urllib.parse

import tensorflow as tf
from absl import logging

from trainer.runtime import checkpointing

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
_TPU_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_CLUSTER_TIMEOUT_SECONDS = 300.0
_PEER_CONNECT_TIMEOUT_SECONDS = 1.0
_PEER_POLL_SECONDS = 0.5
# What a collective op raises when another worker of the cluster is gone (killed, lost, restarted).
PEER_LOST_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                    tf.errors.AbortedError)


class StrategyError(ValueError):
  """The requested strategy cannot be built here; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class WorkerRole:
  """Who this process is in the cluster. Only the chief writes summaries and real checkpoints."""
  is_chief: bool
  task_type: str | None
  task_id: int


def split_cpu(num_devices: int) -> None:
  """Splits the host CPU into `num_devices` logical devices (must run before TensorFlow touches devices)."""
  if num_devices < 1:
    raise StrategyError(f"--virtual_devices must be >= 1, got {num_devices}")
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError as error:
    raise StrategyError(
        "--virtual_devices must be applied before TensorFlow initializes its devices") from error


def create(name: str, *, tpu: str | None = None,
           cluster_timeout: float = DEFAULT_CLUSTER_TIMEOUT_SECONDS) -> tf.distribute.Strategy:
  """The strategy called `name`; unknown names list the valid ones.

  With multi_worker_mirrored, waits up to `cluster_timeout` seconds for every other task of TF_CONFIG
  to come up (see `_wait_for_peers`): TensorFlow itself would wait forever, silently.
  """
  if name not in STRATEGIES:
    raise StrategyError(f"--strategy={name!r} is not one of {', '.join(STRATEGIES)}")
  if tpu and name != "tpu":
    raise StrategyError(f"--tpu={tpu} is only used with --strategy=tpu (got --strategy={name})")
  if name == "default":
    strategy = tf.distribute.get_strategy()
  elif name == "one_device":
    strategy = tf.distribute.OneDeviceStrategy(_local_devices()[0])
  elif name == "mirrored":
    strategy = tf.distribute.MirroredStrategy(_mirrored_devices())
  elif name == "multi_worker_mirrored":
    own, peers = _check_tf_config()
    _wait_for_peers(own, peers, cluster_timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  else:
    strategy = _tpu_strategy(tpu or "local")
  role = worker_role(strategy)
  logging.info("strategy: %s | replicas: %d | devices: %s | worker: %s %d%s", type(strategy).__name__,
               strategy.num_replicas_in_sync, ", ".join(_devices(strategy)), role.task_type or "local",
               role.task_id, " (chief)" if role.is_chief else "")
  return strategy


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
  """This process's role: the chief (or the only worker) saves; other workers only compute."""
  resolver = getattr(strategy, "cluster_resolver", None)
  task_type = getattr(resolver, "task_type", None)
  task_id = int(getattr(resolver, "task_id", 0) or 0)
  is_chief = bool(strategy.extended.should_checkpoint) if task_type else True
  return WorkerRole(is_chief=is_chief, task_type=task_type, task_id=task_id)


def _local_devices() -> list[str]:
  """All local GPUs, or all logical CPUs when there is no GPU (see --virtual_devices)."""
  gpus = tf.config.list_logical_devices("GPU")
  return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]


def _mirrored_devices() -> list[str]:
  """The local GPUs; without one, the logical CPUs if the CPU was split on purpose (`--virtual_devices`).

  An install whose TensorFlow cannot see the GPUs (a CPU-only wheel, a CUDA library missing) would
  otherwise mirror over the one CPU and train, slowly, without a word.
  """
  gpus = tf.config.list_logical_devices("GPU")
  if gpus:
    return [device.name for device in gpus]
  cpus = tf.config.list_logical_devices("CPU")
  if len(cpus) < 2:
    raise StrategyError(
        "--strategy=mirrored: TensorFlow sees no GPU here (tf.config.list_physical_devices('GPU') is empty), "
        "so it would mirror over the one CPU. On a GPU host install TensorFlow with CUDA "
        "(pip install -e '.[gpu]', see docs/DISTRIBUTION.md) and check that nvidia-smi lists the GPUs; "
        "to try distribution on the CPU, split it with --virtual_devices=N")
  logging.warning("--strategy=mirrored: no GPU visible; mirroring over %d logical CPU devices "
                  "(--virtual_devices: for testing distribution, not for speed)", len(cpus))
  return [device.name for device in cpus]


def _devices(strategy: tf.distribute.Strategy) -> list[str]:
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy places ops wherever TensorFlow does.
    return ["(default placement)"]


def _check_tf_config() -> tuple[str, list[str]]:
  """Validates TF_CONFIG's shape so that a typo is reported, not turned into a hang or a stack trace.

  Returns this task's address and the addresses of all other tasks of the cluster.
  """
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    raise StrategyError("--strategy=multi_worker_mirrored needs TF_CONFIG, e.g. TF_CONFIG='{\"cluster\": "
                        "{\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
                        "\"task\": {\"type\": \"worker\", \"index\": 0}}'")
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as error:
    raise StrategyError(f"TF_CONFIG is not valid JSON ({error}): {raw!r}") from error
  cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
  if not isinstance(cluster, dict) or not cluster:
    raise StrategyError(f"TF_CONFIG needs a non-empty 'cluster' mapping of job name to addresses: {raw!r}")
  if not isinstance(task, dict) or task.get("type") not in cluster:
    raise StrategyError(f"TF_CONFIG 'task' must name a job of the cluster ({sorted(cluster)}): {raw!r}")
  index = task.get("index")
  if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
    raise StrategyError(f"TF_CONFIG task index {index!r} is out of range for job {task['type']!r} "
                        f"with {len(cluster[task['type']])} addresses")
  address = str(cluster[task["type"]][index])
  _listen(address, f"TF_CONFIG task {task['type']} {index}").close()
  logging.info("multi_worker_mirrored: this is task %s %d at %s; connecting to the cluster %s",
               task["type"], index, address, json.dumps(cluster))
  # An evaluator runs on its own, outside the strategy's collectives: nobody waits for it.
  peers = [str(peer) for job, addresses in cluster.items() if job != "evaluator" for peer in addresses]
  peers.remove(address)
  return address, peers


def _listen(address: str, owner: str) -> socket.socket:
  """A socket listening on the port of `address`, or a StrategyError if another process listens there
  (a second run, a stale server): TensorFlow's gRPC server would otherwise fail with a stack trace."""
  port = address.rsplit(":", 1)[-1]
  if not port.isdigit():
    raise StrategyError(f"{owner}: address {address!r} has no port (host:port)")
  listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is free
  try:
    listener.bind(("", int(port)))
    listener.listen(64)
  except OSError as error:
    listener.close()
    raise StrategyError(f"{owner}: port {port} of {address} is already in use ({error.strerror}); "
                        "another run or process listens there: stop it or give this task a free port") \
      from error
  return listener


def _wait_for_peers(own: str, peers: list[str], timeout: float) -> None:
  """Returns once every peer address accepts TCP connections; a StrategyError naming the silent ones after
  `timeout` seconds.

  TensorFlow starts a task's gRPC server only inside the MultiWorkerMirroredStrategy constructor, which
  then blocks until every task answers, without a timeout (TensorFlow 2.15 and 2.21; a Python watchdog
  thread did not get to run meanwhile, and the constructor's own barrier timeout comes too late).
  Waiting for the peers' servers alone would deadlock two workers that both wait before their
  constructors; so while it waits, this task listens on its own port (a beacon that accepts connections
  without serving them). A peer counts as up when its beacon or its real server answers; the beacon
  closes before TensorFlow binds the port.
  """
  if timeout <= 0:
    raise StrategyError(f"--cluster_timeout must be > 0 seconds, got {timeout}")
  if not peers:
    return
  logging.info("waiting for workers %s (up to %g s; --cluster_timeout)", ", ".join(peers), timeout)
  deadline = time.monotonic() + timeout
  waiting = list(peers)
  with _listen(own, f"TF_CONFIG task at {own}"):
    while True:
      waiting = [peer for peer in waiting if not _accepts(peer)]
      if not waiting:
        return
      if time.monotonic() >= deadline:
        raise StrategyError(
            f"multi_worker_mirrored: no answer from {', '.join(waiting)} within {timeout:g} s "
            "(--cluster_timeout): start every worker of TF_CONFIG (the same command with its own task "
            "index), check the addresses, firewalls and ports, or raise --cluster_timeout")
      time.sleep(_PEER_POLL_SECONDS)


def _accepts(address: str) -> bool:
  """Whether something listens at host:port (one short connection attempt)."""
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=_PEER_CONNECT_TIMEOUT_SECONDS):
      return True
  except (OSError, ValueError):
    return False


def worker_lost_message(error: Exception, model_dir: str) -> str:
  """What to tell the user when a collective failed because another worker is gone (`PEER_LOST_ERRORS`)."""
  steps = checkpointing.checkpoint_steps(os.path.join(model_dir, "checkpoints"))
  last = f"ckpt-{max(steps)}" if steps else "none (the rerun starts from scratch)"
  # TensorFlow's message starts with "Graph execution error:" and buries the cause in op traces; only
  # the type is worth showing (the full error is in TensorFlow's own log lines with --verbosity=1).
  return (f"worker lost: another worker of the cluster stopped answering ({type(error).__name__}); "
          f"the last checkpoint is {last}; rerun all workers with the same command to resume")


def _tpu_strategy(tpu: str) -> tf.distribute.TPUStrategy:
  """Connects to the TPU (`local` on a TPU VM, a TPU name, or grpc://host:port) and initializes it."""
  if tpu.startswith("grpc://"):
    _require_reachable(tpu)
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, tf.errors.OpError) as error:
    message = (f"--strategy=tpu --tpu={tpu}: no usable TPU ({str(error).splitlines()[0]}). On a Cloud TPU VM "
               "use --tpu=local; for a TPU node give its name or grpc://ADDRESS:8470.")
    raise StrategyError(message) from error
  return tf.distribute.TPUStrategy(resolver)


def _require_reachable(address: str) -> None:
  parsed = urllib.parse.urlparse(address)
  try:
    host_port = (parsed.hostname, parsed.port or 8470)
    with socket.create_connection(host_port, timeout=_TPU_CONNECT_TIMEOUT_SECONDS):
      pass
  except OSError as error:
    raise StrategyError(f"--tpu={address}: cannot reach the TPU worker ({error}); check the address and "
                        "that the TPU is running") from error
