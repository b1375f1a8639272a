"""Compiled programs kept between runs, so that a second run of a config neither traces nor lowers.

JAX's persistent compilation cache (jaxmed turns it on) skips XLA's compile, but its key is the
lowered program, so every run still traces and lowers each step first: 1.0-1.4 s for the demo's
train step on a 2-core CPU, most of a warm start (issue #17). This cache keys the *compiled
executable* (jax.experimental.serialize_executable) by what decides the program before any
tracing, so a hit costs a file read and a load (~0.15 s):

- the program's name and the abstract signature of its arguments (tree structure, shapes,
  dtypes, weak types, shardings);
- `parts`: everything the traced function closes over, which its caller must name: the config
  less HOST_ONLY_FIELDS, and what comes from the data (class count and weights, steps per epoch,
  the feed);
- `environment()`: jaxmed's own source (a digest of every .py file of the package), the versions
  of Python, jax, jaxlib, flax, optax, numpy and ml_dtypes, the backend and its devices, the CPU
  model and flags (XLA compiles for the host's instruction set), XLA_FLAGS, jax's configuration
  and jaxmed's runtime settings (kernel choices, the bfloat16 verdict).

A missed input would silently reuse a wrong program, so the cache checks itself where that is
affordable: with JAXMED_DEBUG=1 (tests/training/test_program_cache.py runs so) a hit is also
traced and lowered, and the lowered text must hash to what the run that compiled it stored, else
AssertionError.

Entries live in $JAXMED_CACHE/programs, one file each, written whole (temporary file, then
rename); beyond MAX_BYTES the least recently used go. An executable is native code and its
wrapper a pickle: like JAX's own compilation cache, only files this user wrote are loaded (owned
by the user, not writable by others); a file that fails to load is removed and compiled afresh.
`train.compilation_cache=False` turns both caches off; runs of several processes do not use
this one.
"""

import contextlib
import functools
import hashlib
import io
import json
import os
import pickle
import platform
import stat
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy

from jaxmed.runtime import paths

_FORMAT = 1  # bump when the file layout below changes
_VOLATILE_JAX_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                         "jax_persistent_cache_min_entry_size_bytes")


@functools.cache
def source_digest() -> str:
  """sha256 over every .py file of the jaxmed package (path and bytes), in a fixed order."""
  root = Path(__file__).resolve().parents[1]
  digest = hashlib.sha256()
  for path in sorted(root.rglob("*.py")):
    digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()


def _cpu() -> dict:
  model, flags = platform.processor(), ""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      key, _, value = line.partition(":")
      if key.strip() == "model name" and not model:
        model = value.strip()
      elif key.strip() == "flags" and not flags:
        flags = value.strip()
  except OSError:
    pass
  return {"model": model, "flags": flags, "machine": platform.machine()}


def environment() -> dict:
  """What, besides the config and the arguments, decides a compiled program (module docstring)."""
  import flax
  import jaxlib
  import ml_dtypes
  import numpy as np
  import optax
  from jaxmed.ops import base as ops_base
  from jaxmed.runtime import settings, xla_flags
  backend = jax.default_backend()
  options = {k: repr(v) for k, v in jax.config.values.items() if k not in _VOLATILE_JAX_OPTIONS}
  record = settings.current().as_record()
  for unused_in_programs in ("cache_dir", "debug", "allocator"):
    record.pop(unused_in_programs, None)
  return {
      "format": _FORMAT, "source": source_digest(), "python": sys.version,
      "versions": [jax.__version__, jaxlib.__version__, flax.__version__, optax.__version__,
                   np.__version__, ml_dtypes.__version__],
      "backend": backend, "platform_version": jax.devices()[0].client.platform_version,
      "devices": [(d.id, d.device_kind, d.process_index) for d in jax.devices()],
      "cpu": _cpu(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "xla_defaults": xla_flags.record().get("set"), "jax_options": options,
      "settings": record,
      "bfloat16_gemm": ops_base.bfloat16_gemm() if backend == "cpu" else None,
  }


def signature(args) -> str:
  """The abstract signature of a program's arguments: tree structure, shape, dtype, weak type
  and sharding of each leaf."""
  leaves, tree = jax.tree.flatten(args)
  described = []
  for leaf in leaves:
    aval = jax.typeof(leaf) if not isinstance(leaf, jax.ShapeDtypeStruct) else leaf
    sharding = getattr(leaf, "sharding", None)
    described.append((tuple(aval.shape), str(aval.dtype), bool(getattr(aval, "weak_type", False)),
                      repr(sharding)))
  return f"{tree}|{described}"


# Config fields that only the host reads (where files are, the seed of the shuffles and of the
# initial values, checkpointing, callbacks): left out of the key, so that changing them keeps the
# compiled programs. What they decide that a program sees (class counts, split sizes, the feed)
# reaches the key through the job's parts and the argument shapes.
HOST_ONLY_FIELDS = ("seed", "data.root", "data.manifest", "data.dedupe", "data.group_by",
                    "data.decoded_cache",
                    "data.synthetic", "data.stream_threads", "data.stream_workers",
                    "train.checkpoint_every_steps", "train.checkpoint_metric",
                    "train.checkpoint_mode", "train.evaluate", "train.compilation_cache",
                    "frozen.early_stopping", "frozen.reduce_on_plateau",
                    "finetune.early_stopping", "finetune.reduce_on_plateau")


def config_part(config) -> dict:
  """The config as a program key sees it: every field but HOST_ONLY_FIELDS."""
  fields = config.to_dict()
  for dotted in HOST_ONLY_FIELDS:
    *parents, leaf = dotted.split(".")
    node = fields
    for parent in parents:
      node = node.get(parent) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.pop(leaf, None)
  return fields


def _key(name: str, parts: dict, args) -> str:
  text = json.dumps({"name": name, "parts": parts, "signature": signature(args),
                     "environment": environment()}, sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()


def _lowered_digest(lowered) -> str:
  return hashlib.sha256(lowered.as_text().encode()).hexdigest()


_hits = threading.local()


def _on_jax_event(event: str, **_):
  if event == "/jax/compilation_cache/cache_hits" and getattr(_hits, "count", None) is not None:
    _hits.count += 1


@contextlib.contextmanager
def _jax_cache_hits():
  """Counts the programs this thread got from JAX's persistent compilation cache meanwhile.

  An executable that JAX's cache loaded serialises without its machine code on XLA:CPU (jaxlib
  0.10.2 and 0.12: loading that copy fails at the first call with "Function ... not found"), so
  only freshly compiled programs are stored. The programs' module names carry this cache's key,
  which holds its folder (ProgramCache.compile), so JAX's cache holds a program only under a key
  whose file is here too; it serves one only when that file was lost, and runs then go on as
  before this cache existed. tests/training/test_program_cache.py fails if JAX stops reporting
  these hits."""
  global _listening
  with _listening_lock:
    if not _listening:
      jax.monitoring.register_event_listener(_on_jax_event)
      _listening = True
  _hits.count, seen = 0, []
  try:
    yield seen  # holds one entry per hit once the block ends
  finally:
    seen.extend([None] * _hits.count)
    _hits.count = None


_listening, _listening_lock = False, threading.Lock()


def trusted(path: Path) -> bool:
  """Written by this user and writable by nobody else (see the module docstring)."""
  st = path.stat()
  return (not hasattr(os, "getuid") or st.st_uid == os.getuid()) and \
      not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class ProgramCache:
  """compile(name, lower, args, parts) -> a jax Compiled, from this cache or compiled now.
  `timings` (summary.json's) gets `program_cache`: per program 'hit', 'miss' or why it was
  not used."""

  def __init__(self, directory: Path | None, timings: dict | None = None, verify: bool = False):
    self.directory = Path(directory) if directory is not None else None
    self.verify = verify
    self.outcomes = {} if timings is None else timings.setdefault("program_cache", {})
    self.files = {}  # name -> the file that holds (or was to hold) the program
    self.read_ahead = [] if timings is None else timings.setdefault("programs_read_ahead", [])

  def compile(self, name: str, make, args, parts: dict):
    """`make()` returns the jitted program, to be called with `args` (values or
    ShapeDtypeStructs); `parts` names everything it closes over (module docstring)."""
    if self.directory is None:
      return make().lower(*args).compile()
    # The folder in the key: JAX's persistent cache, process-wide, may still point where another
    # program cache's run put it (a notebook or a test suite that changed JAXMED_CACHE); its
    # copies then serve only programs whose file is in this folder too (see _jax_cache_hits).
    key = _key(name, {**parts, "program_cache_folder": str(self.directory)}, args)[:40]
    path = self.directory / f"{name}-{key}.jaxprog"
    self.files[name] = path

    def lower():
      jitted = make()
      if hasattr(jitted, "__wrapped__"):  # the module's name, hence JAX's cache key, holds ours
        jitted.__wrapped__.__name__ = f"{name}_{key[:16]}"
      return jitted.lower(*args)

    loaded = self._load(name, path, lower)
    if loaded is not None:
      return loaded
    lowered = lower()
    with _jax_cache_hits() as hits:
      compiled = lowered.compile()
    if hits:  # see _jax_cache_hits: such an executable cannot be stored
      self.outcomes[name] += ", not stored (compiled by JAX's cache)"
    else:
      self._store(name, path, compiled, lowered)
    return compiled

  def shapes(self, name: str, compute, parts: dict):
    """compute() -> a tree of nested dicts of jax.ShapeDtypeStruct (traced with eval_shape: the
    initial variables' shapes, say), or the same from this cache; `parts` as for compile."""
    if self.directory is None:
      return compute()
    path = self.directory / f"{name}-{_key(name, parts, ())[:40]}.json"
    try:
      if path.exists() and trusted(path):
        tree = _shapes_from_json(json.loads(path.read_text()))
        if self.verify:
          assert _shapes_to_json(compute()) == _shapes_to_json(tree), (
              f"program cache: {path.name} holds other shapes than {name} computes now")
        self.outcomes[name] = "hit"
        return tree
    except (OSError, ValueError, KeyError, TypeError):
      pass  # damaged: computed and written again below
    tree = compute()
    self.outcomes[name] = "miss"
    try:
      write_whole(path, json.dumps(_shapes_to_json(tree)).encode())
    except (OSError, TypeError) as e:  # a tree of other containers, or the disk: run on
      self.outcomes[name] = f"miss, not stored ({type(e).__name__})"
    return tree

  def _load(self, name: str, path: Path, lower):
    loaded = self._take_read_ahead(name, path)
    if loaded is None and not path.exists():
      self.outcomes[name] = "miss"
      return None
    try:
      if loaded is None:
        if not trusted(path):
          self.outcomes[name] = "not used: the file is not this user's alone"
          return None
        loaded = read_program(path)
      payload, compiled = loaded
    except Exception as e:  # noqa: BLE001 (damaged, or from an incompatible jax: compile again)
      self.outcomes[name] = f"miss ({type(e).__name__} loading it)"
      path.unlink(missing_ok=True)  # replaced below, unless JAX's cache serves the program
      return None
    if self.verify:  # a bug in the key would show here as a different program
      digest = _lowered_digest(lower())
      assert digest == payload["lowered_sha256"], (
          f"program cache: {path.name} holds another program than {name} lowers to now; an "
          f"input of the program is missing from its key (jaxmed/training/program_cache.py)")
    self.outcomes[name] = "hit"
    os.utime(path)  # recently used: kept longest (see _evict)
    return compiled

  def _take_read_ahead(self, name: str, path: Path):
    """read_program(path) as training/program_preload.py's thread read it, or None: not read
    ahead, or the thread could not (a class from a module not imported yet, say); this thread
    reads it again, and may import."""
    future = files_read_ahead.pop(path, None)
    if future is None:
      return None
    try:
      loaded = future.result()
    except Exception:  # noqa: BLE001 (the read on this thread reports what is wrong)
      return None
    self.read_ahead.append(name)
    return loaded

  def _store(self, name: str, path: Path, compiled, lowered):
    from jax.experimental import serialize_executable
    try:
      executable, in_tree, out_tree = serialize_executable.serialize(compiled)
      payload = pickle.dumps({"executable": executable, "in_tree": in_tree, "out_tree": out_tree,
                              "lowered_sha256": _lowered_digest(lowered),
                              "written": time.time()}, protocol=pickle.HIGHEST_PROTOCOL)
      write_whole(path, payload)
      _evict(self.directory, MAX_BYTES)
    except Exception as e:  # noqa: BLE001 (not serialisable here, or the disk: run on, uncached)
      self.outcomes[name] = f"{self.outcomes.get(name, 'miss')}, not stored ({type(e).__name__})"
      return
    self.outcomes[name] = self.outcomes.get(name, "miss")


class ModuleNotImportedYet(ImportError):
  """read_program(loaded_modules_only=True) met a class whose module is not imported yet."""


class _LoadedModulesUnpickler(pickle.Unpickler):
  """Takes classes from modules already imported and never imports one: a thread that imports
  while the main thread imports the same packages can deadlock on Python's module locks (each
  takes a submodule's lock before its package's), and Python then raises _DeadlockError."""

  def find_class(self, module, name):
    loaded = sys.modules.get(module)
    if loaded is None or getattr(getattr(loaded, "__spec__", None), "_initializing", False):
      raise ModuleNotImportedYet(f"{module} is not imported yet")
    return super().find_class(module, name)


def read_program(path: Path, data: bytes | None = None, loaded_modules_only: bool = False):
  """(payload, the loaded executable) from one file of this cache (or its bytes `data`, read
  already); raises if it cannot. A thread beside the main one passes loaded_modules_only."""
  from jax.experimental import serialize_executable
  data = path.read_bytes() if data is None else data
  if loaded_modules_only:
    payload = _LoadedModulesUnpickler(io.BytesIO(data)).load()
  else:
    payload = pickle.loads(data)
  compiled = serialize_executable.deserialize_and_load(
      payload["executable"], payload["in_tree"], payload["out_tree"])
  return payload, compiled


# path -> Future of read_program(path), for files that training/program_preload.py started
# reading before the run asked for them (only files trusted() passed).
files_read_ahead: dict = {}


MAX_BYTES = 2 * 2**30  # the programs kept, at most (a MobileNetV2 train step: 2-6 MB)


def _evict(directory: Path, max_bytes: int):
  """Removes the least recently used programs until the folder holds at most `max_bytes`."""
  paths.evict_least_recent(directory.glob("*.jaxprog"), max_bytes)


def write_whole(path: Path, payload: bytes):
  """The file whole or not at all, readable by this user alone."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
  with open(temporary, "wb") as f:
    f.write(payload)
  os.chmod(temporary, 0o600)
  os.replace(temporary, path)


def _shapes_to_json(tree) -> list:
  """[[dict keys...], shape, dtype] per leaf; TypeError for anything but nested str-keyed dicts."""
  rows = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if not all(isinstance(k, jax.tree_util.DictKey) and isinstance(k.key, str) for k in path):
      raise TypeError(f"not a tree of str-keyed dicts at {jax.tree_util.keystr(path)}")
    rows.append([[k.key for k in path], list(leaf.shape), str(leaf.dtype)])
  return rows


def _shapes_from_json(rows: list):
  if rows and not rows[0][0]:  # a single leaf
    return jax.ShapeDtypeStruct(tuple(rows[0][1]), jax.numpy.dtype(rows[0][2]))
  tree = {}
  for keys, shape, dtype in rows:
    node = tree
    for key in keys[:-1]:
      node = node.setdefault(key, {})
    node[keys[-1]] = jax.ShapeDtypeStruct(tuple(shape), jax.numpy.dtype(dtype))
  return tree


def run_directory() -> Path:
  """Where training runs keep their programs (the folder is part of every key there)."""
  return paths.cache_dir() / "programs"


def for_run(enabled: bool, timings: dict | None = None) -> ProgramCache:
  """The cache a training run uses: $JAXMED_CACHE/programs, or none (see the module docstring)."""
  from jaxmed.runtime import settings
  use = enabled and jax.process_count() == 1
  return ProgramCache(run_directory() if use else None, timings,
                      verify=settings.current().debug)
