"""The program cache's files for a config's later programs, read while the process starts.

A run loads the fine-tuning train step and the full model's eval step from the program cache
(training/program_cache.py) in the background, during the frozen phase (training/compile_ahead.py).
On an accelerator that costs nothing: the host idles while the device steps. On a CPU the load
(0.9-1.1 s of XLA work for the demo's 6.7 MB fine-tuning step, on one core, with the GIL released)
shares the cores with the frozen phase's steps: measured on the 2-core CPU (2026-12-04, Python
3.12), the demo's first frozen epoch took 1.0-1.4 s instead of 0.42-0.48 s, and a lower thread
priority for the load (nice 19, SCHED_IDLE) only moved the slowdown into the second epoch.
While the process starts, though, one core idles: importing flax, optax and jaxmed (0.55 s) and
reading the data and building the model (0.5 s) are single-threaded Python.

So a run that started from its first phase remembers which of its programs were loaded in the
background (a small index under programs/read_ahead/, named by the config as the program keys see
it), and the next run of that config on a CPU starts reading those files in one thread as soon as
its config is known (jaxmed.train calls start() before its heavy imports). The program cache takes
a file read ahead only where it would have read that very file (its name is the program's full
key), so a stale index wastes a read, never serves a wrong program; JAXMED_DEBUG=1 still checks
each hit against a fresh lowering. summary.json lists the programs read ahead under
timings.programs_read_ahead.

The thread never imports: two threads importing the same packages can deadlock on Python's module
locks (CI saw `_DeadlockError` in optax, 2026-12-04). So it reads the files' bytes at once, and
unpickles them (their trees name flax, optax and jaxmed classes) only after jaxmed.train has
imported those (imports_finished()), taking classes only from modules imported already
(program_cache.read_program's loaded_modules_only). The XLA load, most of the work, follows;
it still overlaps the data and model set-up. A file it cannot read so is read again by the
program cache, on the main thread.
"""

import atexit
import concurrent.futures
import hashlib
import json
import threading

import jax

from jax.experimental import serialize_executable  # noqa: F401 (imported here, not in the thread)

from jaxmed.training import program_cache

_started_for = None  # the index name of the config this process read ahead for
_thread = None
_imports_done = threading.Event()  # clear while the main thread still imports (see above)
_imports_done.set()
_exiting = False


def index_name(config) -> str:
  """The config as the program keys see it (program_cache.config_part), digested."""
  text = json.dumps(program_cache.config_part(config), sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:40]


def _index(name: str):
  return program_cache.run_directory() / "read_ahead" / f"{name}.json"


def start(config, imports_follow: bool = False):
  """Starts reading the files the last run of `config` loaded in the background, where this
  process will want them (a single CPU process with the compilation cache on); once per config
  and process. With `imports_follow`, the thread unpickles them only after imports_finished();
  without, the caller has imported what it needs (so a later start(config) ends the wait)."""
  global _started_for, _thread
  if not imports_follow:
    imports_finished()
  try:
    name, cached = index_name(config), config.train.get("compilation_cache", True)
  except Exception:  # noqa: BLE001 (a config the run will reject with a clear error of its own)
    return
  if name == _started_for or not cached:
    return
  _started_for = name
  if jax.process_count() > 1 or jax.default_backend() != "cpu":
    return  # several processes do not use the cache; an accelerator hides the load anyway
  folder = program_cache.run_directory()
  try:
    files = [folder / f for f in json.loads(_index(name).read_text())["files"]]
  except (OSError, ValueError, KeyError, TypeError):
    return  # no index yet (or a damaged one: rewritten at the end of this run)
  futures = {}
  for path in files:
    if path.parent == folder and path.exists() and program_cache.trusted(path):
      futures[path] = program_cache.files_read_ahead[path] = concurrent.futures.Future()
  if futures:
    if imports_follow:
      _imports_done.clear()
    _thread = threading.Thread(target=_read_all, args=(futures,), name="jaxmed-read-ahead",
                               daemon=True)
    _thread.start()


def imports_finished():
  """The main thread has imported what the files' trees name: the thread may unpickle them."""
  _imports_done.set()


def _read_all(futures: dict):
  read = {}
  for path, future in futures.items():
    try:
      read[path] = path.read_bytes()
    except OSError as e:
      future.set_exception(e)
  _imports_done.wait()
  for path, data in read.items():
    try:
      if _exiting:
        raise RuntimeError("the process exits")
      futures[path].set_result(program_cache.read_program(path, data, loaded_modules_only=True))
    except Exception as e:  # noqa: BLE001 (the program cache reads such a file again)
      futures[path].set_exception(e)


@atexit.register
def _finish():
  """An exit before the run took the files (a config error, say) waits for the read under way,
  so that the interpreter does not shut down under XLA."""
  global _exiting
  if _thread is not None:
    _exiting = True
    _imports_done.set()
    _thread.join(timeout=30)


def remember(programs: program_cache.ProgramCache, config, names: list[str]):
  """Records the files of `names` (the programs this run loaded or compiled in the background)
  as what the next run of `config` reads ahead."""
  if programs.directory is None:
    return
  files = [programs.files[n].name for n in names if n in programs.files]
  try:
    program_cache.write_whole(_index(index_name(config)), json.dumps({"files": files}).encode())
  except OSError:
    pass  # a read-only cache folder: the next run loads them in the background, as before
