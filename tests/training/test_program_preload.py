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
