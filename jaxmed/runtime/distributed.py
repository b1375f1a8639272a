"""Data parallelism over several processes: one JAX process per host (or per group of devices),
all devices of all processes in one global 'data' mesh.

Every process reads the same files, computes the same epoch order from the same seed and so holds
the same host arrays; each then supplies only its own devices' shards of every global array, so no
data crosses processes except gradients (inside the compiled step), evaluation logits, stop
requests, one digest of the dataset and the checkpoint barriers orbax runs itself. With one process every helper here does
what plain single-process JAX does.

jax.distributed.initialize must run before any device array exists, so importing jaxmed.train
must not create one (jaxmed.models builds constants at import: train and optim import it late).

Start:  python -m jaxmed.train --distributed ...   (TPU pod slices, SLURM, Open MPI: jax finds the
        coordinator itself), or set JAXMED_COORDINATOR=host:port, JAXMED_NUM_PROCESSES=N and
        JAXMED_PROCESS_ID=i on each process (any machines, or several processes on one).
"""

import hashlib
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

COORDINATOR, NUM_PROCESSES, PROCESS_ID = ("JAXMED_COORDINATOR", "JAXMED_NUM_PROCESSES",
                                          "JAXMED_PROCESS_ID")


def initialize(requested: bool = False) -> bool:
  """Joins the other processes (jax.distributed.initialize) when `requested` or JAXMED_COORDINATOR
  is set; returns whether it did. Must run before anything touches a device."""
  coordinator = os.environ.get(COORDINATOR)
  if not (requested or coordinator):
    return False
  explicit = {}
  if coordinator:
    missing = [name for name in (NUM_PROCESSES, PROCESS_ID) if name not in os.environ]
    if missing:
      raise ValueError(f"{COORDINATOR} is set but {', '.join(missing)} is not")
    explicit = dict(coordinator_address=coordinator, num_processes=int(os.environ[NUM_PROCESSES]),
                    process_id=int(os.environ[PROCESS_ID]))
  jax.distributed.initialize(**explicit)
  return True


def is_primary() -> bool:
  """Process 0 writes the run's files and prints; the others only compute."""
  return jax.process_index() == 0


def say(message: str):
  """Prints on the primary process only, so a multi-host job's console shows each line once."""
  if is_primary():
    print(message, flush=True)


def put(tree, sharding):
  """jax.device_put(tree, sharding) for host values that are the same on every process;
  `sharding` is one for every leaf, or a tuple matching a tuple `tree`.

  With several processes, device_put of a host array onto devices of other processes first checks
  that every process passed the same value (an all-gather of the whole array: the dataset, every
  step's indices); here each process places its own shards from its copy without that check.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def place(x, sharding):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)  # already global: at most a reshard
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  if isinstance(sharding, tuple):
    return tuple(put(part, s) for part, s in zip(tree, sharding, strict=True))
  return jax.tree.map(lambda x: place(x, sharding), tree)


def step_input(tree, sharding):
  """Host values for a compiled step's call: with one process, as they are (the compiled program
  places them per its input sharding, in C++: 30 us a call against 110-240 us for a device_put
  with a NamedSharding first, measured 2026-12-03 on jax 0.10.2 and 0.12.0.1, 1 and 4 CPU
  devices; the loop does this every step); with several, placed by put()."""
  return tree if jax.process_count() == 1 else put(tree, sharding)


def to_host(x) -> np.ndarray:
  """The whole value of a (possibly multi-process) array as numpy, on every process."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def primary_succeeded(ok: bool) -> bool:
  """Process 0's `ok`, on every process (with one process: `ok`), so that all raise together
  after a failure on the primary alone instead of waiting for it in the next collective."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.broadcast_one_to_all(np.bool_(ok)))


def barrier(name: str):
  """Waits until every process got here (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def assert_same_everywhere(*arrays: np.ndarray, what: str = "the data"):
  """Fails when processes hold different arrays (e.g. hosts read different copies of a folder):
  they would train on different batches and silently disagree. Exchanges a 32-byte digest only."""
  if jax.process_count() == 1:
    return
  digest = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    digest.update(f"{a.dtype}{a.shape}".encode())
    digest.update(memoryview(a).cast("B"))
  multihost_utils.assert_equal(
      np.frombuffer(digest.digest(), np.uint8),
      f"process {jax.process_index()} loaded different {what} than the others: every host must "
      f"read the same files (a shared filesystem, or identical copies)")


class StopAgreement:
  """Whether to stop and checkpoint now, the same answer on every process.

  A SIGTERM can reach one host only, or the hosts at different steps; a process that stopped alone
  would leave the others waiting in the next collective. Every `every` steps the processes
  exchange their stop flags (one tiny all-gather, about as often as the loop already reads the
  loss) and all stop if any was asked to.
  """

  def __init__(self, every: int = 5):
    self.every, self.last = every, None

  def __call__(self, stop_requested, step: int) -> bool:
    """Called after each dispatch (of one step or a block of them) with the global step."""
    if jax.process_count() == 1:
      return bool(stop_requested)
    if self.last is not None and step - self.last < self.every:  # every process sees these steps
      return False
    self.last = step
    flags = multihost_utils.process_allgather(np.bool_(bool(stop_requested)))
    return bool(np.any(flags))


class Discard:
  """Stands in for a log file or TensorBoard writer on processes other than the primary."""

  def __getattr__(self, name):
    return lambda *args, **kwargs: None


def primary_only(make):
  """make() on the primary process, a Discard elsewhere."""
  return make() if is_primary() else Discard()
