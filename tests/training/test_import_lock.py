"""Imports that may overlap run under one lock (jaxmed/runtime/import_lock.py): etils' lazy-import
window, which grain's and tensorflow_datasets' imports open, swaps `builtins.__import__` for the
whole process, so a module another thread imports meanwhile gets LazyModule stand-ins (CI,
2026-12-04: the run's background import of orbax met the streaming path's `import grain`, and
the first checkpoint failed with "'LazyModule' object is not callable").

The race itself depends on timing (a forced one also waits on Python's per-module import locks),
so the tests show the hazard on plain modules and check that each of jaxmed's overlapping imports
waits for the lock; each runs in a fresh interpreter, where nothing is imported yet."""

import subprocess
import sys
import textwrap

import pytest


def _run(script: str) -> str:
  done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout.strip()


def test_the_lazy_import_window_reaches_other_threads():
  """Why the lock exists: an import in another thread during the window gets a LazyModule."""
  pytest.importorskip("etils")
  assert _run("""
      import threading, time
      from etils import epy
      seen = {}
      def other_thread():
        time.sleep(0.2)
        from json import decoder
        seen["decoder"] = type(decoder).__name__
      thread = threading.Thread(target=other_thread)
      thread.start()
      with epy.lazy_imports():
        time.sleep(1.0)
      thread.join()
      print(seen["decoder"])
      """) == "LazyModule"


@pytest.mark.parametrize("module,setup,call", [
    ("orbax.checkpoint", "from jaxmed.training import checkpoint", "checkpoint.orbax()"),
    ("grain", "from jaxmed.training import input_path", "input_path.stream_module()"),
    ("tensorflow_datasets", "from jaxmed.data import archive",
     "archive.tensorflow_datasets('tfds:x')"),
])
def test_each_overlapping_import_waits_for_the_lock(module, setup, call):
  pytest.importorskip(module)
  assert _run(f"""
      import sys, threading, time
      from jaxmed.runtime import import_lock
      {setup}
      assert {module!r} not in sys.modules
      import_lock.IMPORTS.acquire()  # as another import would hold it
      thread = threading.Thread(target=lambda: {call})
      thread.start()
      time.sleep(1.0)
      waited = {module!r} not in sys.modules and thread.is_alive()
      import_lock.IMPORTS.release()
      thread.join()
      print(waited, {module!r} in sys.modules)
      """) == "True True"
