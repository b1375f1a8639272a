"""Programs compiled in a background thread while the run does something else.

A run with a frozen phase on cached features needs only small programs before its first step;
the fine-tuning train step and the full model's eval step (the largest compiles of a run) are
needed later. Compiling them in one background thread from the first step on takes them off
the critical path: XLA compiles with the GIL released, and the frozen phase's steps are small
(on a 2-core CPU they still share the cores: the frozen phase's steps run slower meanwhile).
Tracing is thread-safe in JAX and Flax (their trace state is thread-local).

`Compiling` stands in for the compiled program: calling it (or `result()`) waits for the compile
the first time. summary.json records each program's compile time under timings.programs and, in
timings.compile_s, only what the run waited for.
"""

import concurrent.futures
import threading
import time

_pool = None
_pool_lock = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
  global _pool
  with _pool_lock:
    if _pool is None:  # one thread: two compiles at once would compete for the same cores
      _pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxmed-compile")
    return _pool


_waiting = []  # work created but not started (see start_all)
_started = False  # start_all() was called in this run: new work starts at once


def start_all():
  """Starts the background work created so far. The loop calls this once its first step is
  running: before that, tracing or importing in the background (which holds the GIL) would slow
  the compile of the first step's program, which the user is waiting for."""
  global _started
  _started = True
  while _waiting:
    _waiting.pop(0).start()


def forget_waiting():
  """Drops work that was never started (a run that failed before its first step); work
  created from now on waits for start_all() again."""
  global _started
  _started = False
  _waiting.clear()


class Later:
  """task() run in the background thread once start_all() is called, or here and now when its
  result is needed first."""

  def __init__(self, task):
    self._task, self._future = task, None
    if _started:
      self.start()
    else:
      _waiting.append(self)

  def start(self):
    if self._future is None:
      self._future = _executor().submit(self._task)

  def result(self):
    if self in _waiting:
      _waiting.remove(self)
    self.start()
    return self._future.result()


class Compiling:
  """`build()` (returning a jax Compiled: a compile, or a load from training/program_cache.py)
  run in the background (see Later); calling it, or result(), waits for it the first time."""

  def __init__(self, name: str, build, timings: dict):
    self.name, self.timings, self._compiled = name, timings, None
    self._later = Later(lambda: self._compile(build))

  def _compile(self, build):
    start = time.perf_counter()
    compiled = build()
    self.timings["programs"][self.name] = time.perf_counter() - start
    return compiled

  def result(self):
    """The compiled program (the compile's exception, if it failed)."""
    if self._compiled is None:
      start = time.perf_counter()
      self._compiled = self._later.result()
      waited = time.perf_counter() - start
      self.timings["compile_s"] += waited
      self.timings.setdefault("compile_waited_s", {})[self.name] = waited
    return self._compiled

  def __call__(self, *args):
    return self.result()(*args)
