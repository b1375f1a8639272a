"""Programs compiled in a background thread while the run does something else.

A run with a frozen phase on cached features needs only small programs before its first step;
the fine-tuning train step and the full model's eval step (the largest compiles of a run) are
needed minutes later. Compiling them in one background thread from the start takes them off
the critical path: XLA compiles with the GIL released, and the frozen phase's steps are small.
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


class Compiling:
  """`lower()` (returning a jax Lowered) compiled in the background thread."""

  def __init__(self, name: str, lower, timings: dict):
    self.name, self.timings, self._compiled = name, timings, None
    self._future = _executor().submit(self._compile, lower)

  def _compile(self, lower):
    start = time.perf_counter()
    compiled = lower().compile()
    self.timings["programs"][self.name] = time.perf_counter() - start
    return compiled

  def result(self):
    """The compiled program (the compile's exception, if it failed)."""
    if self._compiled is None:
      start = time.perf_counter()
      self._compiled = self._future.result()
      waited = time.perf_counter() - start
      self.timings["compile_s"] += waited
      self.timings.setdefault("compile_waited_s", {})[self.name] = waited
    return self._compiled

  def __call__(self, *args):
    return self.result()(*args)


def compiled(program):
  """A program, whether given compiled or as Compiling."""
  return program.result() if isinstance(program, Compiling) else program
