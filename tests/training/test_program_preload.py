"""Programs read ahead while a run starts (jaxmed/training/program_preload.py): the index a run
leaves names the files of its background programs; the next start() of the same config reads
them in a thread, and the program cache serves that read only for the very file it would have
loaded. Stale, foreign or outside-the-folder entries are not read. The whole-run check (a second
`python -m jaxmed.train` reads eval and train_finetune ahead, each hit checked against a fresh
lowering) is in test_program_cache.py."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmed.training import program_cache, program_preload


def _config(lr: float):
  return ml_collections.ConfigDict({"seed": 0, "train": {"compilation_cache": True},
                                    "frozen": {"learning_rate": lr}})


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXMED_CACHE", str(tmp_path))
  monkeypatch.setattr(program_preload, "_started_for", None)
  program_cache.files_read_ahead.clear()
  yield tmp_path / "programs"
  program_cache.files_read_ahead.clear()


def _compile(name: str, scale: float):
  x = jnp.arange(12.0)
  timings = {}
  programs = program_cache.ProgramCache(program_cache.paths.cache_dir() / "programs", timings)
  value = programs.compile(name, lambda: jax.jit(lambda v: jnp.tanh(v) * scale), (x,),
                           {"scale": scale})(x)
  np.testing.assert_allclose(np.asarray(value), np.tanh(np.arange(12.0)) * scale, rtol=1e-6)
  return programs, timings


def test_the_next_start_reads_the_remembered_files_and_the_cache_serves_them(cache):
  programs, _ = _compile("f", 2.0)
  _compile("g", 3.0)
  program_preload.remember(programs, _config(0.1), ["f", "not_compiled"])
  index = json.loads(next((cache / "read_ahead").glob("*.json")).read_text())
  assert index == {"files": [programs.files["f"].name]}
  program_preload.start(_config(0.1))
  assert list(program_cache.files_read_ahead) == [programs.files["f"]]
  program_preload._thread.join(timeout=60)
  _, timings = _compile("f", 2.0)
  assert timings["program_cache"]["f"] == "hit" and timings["programs_read_ahead"] == ["f"]
  assert not program_cache.files_read_ahead  # taken once
  _, timings = _compile("g", 3.0)  # not in the index: loaded as before
  assert timings["program_cache"]["g"] == "hit" and timings["programs_read_ahead"] == []
  program_preload.start(_config(0.1))  # once per config and process
  assert not program_cache.files_read_ahead


def test_another_config_stale_foreign_and_escaping_entries_are_not_read(cache):
  programs, _ = _compile("f", 2.0)
  program_preload.remember(programs, _config(0.1), ["f"])
  program_preload.start(_config(0.2))  # another config: another index (none)
  assert not program_cache.files_read_ahead
  index = program_preload._index(program_preload.index_name(_config(0.1)))
  index.write_text(json.dumps({"files": ["f-gone.jaxprog", "../programs/" +
                                         programs.files["f"].name]}))
  program_preload._started_for = None
  program_preload.start(_config(0.1))
  assert not program_cache.files_read_ahead
  program_preload.remember(programs, _config(0.1), ["f"])
  programs.files["f"].chmod(0o666)  # writable by others: never loaded (program_cache.trusted)
  program_preload._started_for = None
  program_preload.start(_config(0.1))
  assert not program_cache.files_read_ahead
  index.write_text("{damaged")
  program_preload._started_for = None
  program_preload.start(_config(0.1))  # ignored; the run rewrites it at its end
  assert not program_cache.files_read_ahead


_LATE_MODULE = "import collections\nPair = collections.namedtuple('Pair', 'tanh scaled')\n"

_FRESH_PROCESS = r"""
import atexit, json, sys, time
sys.path.insert(0, sys.argv[1])
atexit.register(lambda: print("AT_EXIT", "late_module" in sys.modules))  # runs last
import jax, jax.numpy as jnp, ml_collections
from jaxmed.training import program_cache, program_preload
config = ml_collections.ConfigDict({"seed": 0, "train": {"compilation_cache": True},
                                    "frozen": {"learning_rate": 0.1}})
def compile_f():
  import late_module
  timings = {}
  programs = program_cache.ProgramCache(program_cache.paths.cache_dir() / "programs", timings)
  x = jnp.arange(3.0)
  out = programs.compile("f", lambda: jax.jit(lambda v: late_module.Pair(jnp.tanh(v), 2 * v)),
                         (x,), {"scale": 2})(x)
  assert type(out).__name__ == "Pair" and float(out.scaled[2]) == 4.0
  return programs, timings
if sys.argv[2] == "write":
  programs, _ = compile_f()
  program_preload.remember(programs, config, ["f"])
  sys.exit()
program_preload.start(config, imports_follow=True)
time.sleep(2)  # the thread has read the file by now; the main thread 'imports' meanwhile
print("DURING_IMPORTS", "late_module" in sys.modules)
if sys.argv[2] == "exit":
  sys.exit()  # e.g. a config error before the run's imports finished
if sys.argv[2] == "imported":
  import late_module
program_preload.imports_finished()
program_preload._thread.join()  # before compile_f imports late_module on this thread
print("TIMINGS", json.dumps(compile_f()[1]))
"""


def _fresh_process(tmp_path, mode):
  import os
  import subprocess
  import sys
  done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(tmp_path), mode],
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAXMED_CACHE": str(tmp_path / "cache")})
  assert done.returncode == 0, done.stderr
  return dict(line.split(" ", 1) for line in done.stdout.splitlines()
              if line.split(" ")[0] in ("TIMINGS", "DURING_IMPORTS", "AT_EXIT"))


def test_the_thread_imports_nothing_while_the_main_thread_imports(tmp_path):
  """Two threads importing the same packages can deadlock (CI: _DeadlockError in optax). The
  program's output tree names a class of a module the fresh process has not imported: the
  thread must not import it before imports_finished(), nor after (it takes only classes of
  modules imported already); a file it cannot read so is read again on the main thread."""
  (tmp_path / "late_module.py").write_text(_LATE_MODULE)
  _fresh_process(tmp_path, "write")
  imported = _fresh_process(tmp_path, "imported")
  assert imported["DURING_IMPORTS"] == "False"
  timings = json.loads(imported["TIMINGS"])
  assert timings["program_cache"]["f"] == "hit" and timings["programs_read_ahead"] == ["f"]
  not_imported = _fresh_process(tmp_path, "not_imported")  # imports_finished() came too early
  assert not_imported["DURING_IMPORTS"] == "False"
  timings = json.loads(not_imported["TIMINGS"])
  assert timings["program_cache"]["f"] == "hit" and timings["programs_read_ahead"] == []
  exited = _fresh_process(tmp_path, "exit")  # exits before imports_finished(): no import, no hang
  assert exited["DURING_IMPORTS"] == "False" and exited["AT_EXIT"] == "False"
