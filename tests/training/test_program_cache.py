"""jaxmed's cache of compiled programs (jaxmed/training/program_cache.py): a second run of a config
loads every program instead of tracing and compiling it, trains to the same parameters; without
them, JAX's persistent cache serves every compile (its keys do not churn); a changed input of a
program is a new key; damaged, foreign or unstorable entries fall back to a
compile. The second runs use JAXMED_DEBUG=1, under which each hit is also lowered and must equal
the program that was stored (a key that misses an input fails here)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conftest import write_label_tree
from jaxmed.training import program_cache

REPO = Path(__file__).resolve().parents[2]


def _train(root, workdir, cache, *overrides, debug=False):
  env = {**os.environ, "JAXMED_CACHE": str(cache)}
  env.pop("JAXMED_DEBUG", None)
  if debug:
    env["JAXMED_DEBUG"] = "1"
  done = subprocess.run(
      [sys.executable, "-m", "jaxmed.train", "--config", "tests/tiny_config.py",
       f"--config.data.root={root}", f"--workdir={workdir}", *overrides],
      cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert done.returncode == 0, done.stdout + done.stderr
  return json.loads((Path(workdir) / "summary.json").read_text())


def _xla_entries(cache: Path) -> set[str]:
  return {p.name for p in (cache / "xla").iterdir()}


def test_later_runs_load_every_program_or_compile_nothing_new(tmp_path):
  """Three runs of one config on one cache folder: the first compiles and stores every program;
  the second (other data folder and workdir) loads them all and trains the same; the third,
  with jaxmed's programs deleted, compiles through JAX's persistent cache and adds no entry to
  it (no cache-key churn from constants that change between runs: a time stamp, a seed drawn at
  start, a path baked into a program)."""
  root = write_label_tree(tmp_path / "data", {"train": {"a": 24, "b": 24}, "test": {"a": 4, "b": 4}})
  cache = tmp_path / "cache"
  first = _train(root, tmp_path / "one", cache)
  outcomes = first["timings"]["program_cache"]
  assert set(outcomes) == {"features", "eval_features", "train_frozen", "eval", "train_finetune",
                           "optimizer_init_frozen", "optimizer_init_finetune"}
  assert set(outcomes.values()) == {"miss"}, outcomes  # and each stored
  assert len(list((cache / "programs").glob("*.jaxprog"))) == 7
  assert {"eval", "train_frozen", "train_finetune"} <= set(first["timings"]["programs"])
  xla = _xla_entries(cache)
  assert len(xla) >= 3
  # Another copy of the data (data.root is host-only): every program loads, each checked against
  # a fresh lowering (JAXMED_DEBUG=1), and the training is the same.
  copy = Path(shutil.copytree(root, tmp_path / "copy"))
  second = _train(copy, tmp_path / "two", cache, debug=True)
  assert set(second["timings"]["program_cache"].values()) == {"hit"}
  # The programs the first run loaded in the background were read while the second started
  # (training/program_preload.py; data.root is host-only, so the config is the same to it).
  assert sorted(second["timings"]["programs_read_ahead"]) == ["eval", "optimizer_init_finetune",
                                                             "train_finetune"]
  assert second["final_params_sha256"] == first["final_params_sha256"]
  shutil.rmtree(cache / "programs")
  third = _train(root, tmp_path / "three", cache)
  assert set(third["timings"]["program_cache"].values()) == {"miss, not stored (compiled by "
                                                             "JAX's cache)"}
  assert _xla_entries(cache) == xla
  assert set(third["timings"]["programs"]) == set(first["timings"]["programs"])
  assert third["final_params_sha256"] == first["final_params_sha256"]
  epochs = third["timings"]["epochs"]
  assert [e["phase"] for e in epochs] == ["frozen", "finetune", "finetune"]
  assert all(e["train_s"] > 0 and e["val_s"] > 0 for e in epochs)
  assert all(0 < e["host_cpu_s"] <= e["train_s"] + 0.05 for e in epochs)  # one thread's CPU time
  assert all("boundary_s" in e for e in epochs[:-1])
  # Each phase's first step timed once (a program's first run), within its first epoch.
  first_steps = third["timings"]["phase_first_step_s"]
  assert set(first_steps) == {"frozen", "finetune"}
  assert 0 < first_steps["frozen"] == third["timings"]["first_step_in_epoch_s"] <= epochs[0]["train_s"]
  assert 0 < first_steps["finetune"] <= epochs[1]["train_s"]


# In a fresh process, with JAX's persistent cache in its own folder: jaxmed's cache in folder A,
# then A's entry writable by others, then A's entry damaged, then A's entry lost (JAX's cache
# holds the program), then the same program through a cache in folder B.
_SCRIPT = """
import json, os, sys
from pathlib import Path
import jax, jax.numpy as jnp
from jaxmed.training import program_cache
jax.config.update("jax_compilation_cache_dir", sys.argv[1] + "/xla")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
x = jnp.arange(12.0)
make = lambda: jax.jit(lambda v: jnp.tanh(v[::2]) * 3.0)
out = {}
def run(folder, label):
  timings = {}
  cache = program_cache.ProgramCache(Path(sys.argv[1]) / folder, timings)
  value = cache.compile("f", make, (x,), {"case": 1})(x)
  out[label] = [timings["program_cache"]["f"], float(value.sum())]
run("a", "first")
run("a", "again")
entry = next((Path(sys.argv[1]) / "a").glob("*.jaxprog"))
os.chmod(entry, 0o666)
run("a", "foreign")
os.chmod(entry, 0o600)
entry.write_bytes(entry.read_bytes()[:100])
run("a", "damaged")
out["damaged_removed"] = [str(not entry.exists()), 0.0]
run("a", "jax_cache")
run("b", "other_folder")
out["stored_in_b"] = [str(len(list((Path(sys.argv[1]) / "b").glob("*.jaxprog")))), 0.0]
print(json.dumps(out))
"""


def test_fallbacks_damaged_foreign_and_jax_cached_entries(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "JAXMED_DEBUG"}
  done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 0, done.stdout + done.stderr
  out = json.loads(done.stdout.strip().splitlines()[-1])
  expected = float(np.sum(np.tanh(np.arange(12.0)[::2]) * 3.0))
  assert all(abs(value - expected) < 1e-4 for label, (_, value) in out.items()
             if label not in ("damaged_removed", "stored_in_b")), out
  assert out["first"][0] == "miss" and out["again"][0] == "hit"
  # JAX's cache served it (same module name, same program): JAX reports the hit, and such an
  # executable is not stored (it would load without its machine code).
  assert out["jax_cache"][0] == "miss, not stored (compiled by JAX's cache)"
  assert not list((tmp_path / "a").glob("*.jaxprog"))
  # Another program cache's folder is part of the key: JAX's copy (keyed by A's module name) is
  # not served there, so B compiles the program itself and stores it.
  assert out["other_folder"][0] == "miss" and out["stored_in_b"][0] == "1", out
  assert out["foreign"][0].startswith("not used: the file is not this user's alone")
  # Could not be loaded: compiled again (here by JAX's cache, so not stored) and the damaged
  # file removed, so that later runs do not try it again.
  assert out["damaged"][0] == ("miss (UnpicklingError loading it), not stored (compiled by "
                               "JAX's cache)"), out
  assert out["damaged_removed"][0] == "True"


def test_shapes_round_trip_and_refuse_other_trees(tmp_path):
  tree = {"params": {"dense": {"kernel": jax.ShapeDtypeStruct((3, 4), jnp.bfloat16),
                               "bias": jax.ShapeDtypeStruct((4,), jnp.float32)}},
          "features": jax.ShapeDtypeStruct((1, 1, 1, 8), jnp.float32)}
  cache = program_cache.ProgramCache(tmp_path)
  calls = []

  def compute():
    calls.append(1)
    return tree

  assert cache.shapes("s", compute, {"a": 1}) == tree
  assert cache.shapes("s", compute, {"a": 1}) == tree  # from the file
  assert len(calls) == 1 and cache.outcomes["s"] == "hit"
  cache.shapes("s", compute, {"a": 2})  # another key
  assert len(calls) == 2
  listed = program_cache.ProgramCache(tmp_path / "l")
  odd = {"layers": [jax.ShapeDtypeStruct((2,), jnp.float32)]}
  assert listed.shapes("t", lambda: odd, {}) == odd
  assert listed.outcomes["t"] == "miss, not stored (TypeError)"


def test_the_key_sees_shapes_dtypes_shardings_and_parts():
  a = (np.zeros((2, 3), np.float32),)
  key = program_cache._key("p", {"x": 1}, a)
  assert key == program_cache._key("p", {"x": 1}, (np.ones((2, 3), np.float32),))  # values: no
  assert key != program_cache._key("p", {"x": 1}, (np.zeros((3, 2), np.float32),))
  assert key != program_cache._key("p", {"x": 1}, (np.zeros((2, 3), np.int32),))
  assert key != program_cache._key("p", {"x": 2}, a)
  assert key != program_cache._key("q", {"x": 1}, a)
  sharded = jax.ShapeDtypeStruct((2, 3), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(
      jax.devices()[0]))
  assert program_cache._key("p", {"x": 1}, (sharded,)) != key


def test_host_only_fields_leave_the_key_and_nothing_else():
  from jaxmed.runtime import config_files
  config = config_files.load("demo")
  part = program_cache.config_part(config)
  assert "seed" not in part and "root" not in part["data"]
  assert "early_stopping" not in part["finetune"]
  assert part["finetune"]["learning_rate"] == config.finetune.learning_rate
  assert part["data"]["image_size"] == config.data.image_size
  assert config.data.root  # the config itself is untouched


def test_disabled_cache_compiles():
  cache = program_cache.ProgramCache(None)
  compiled = cache.compile("f", lambda: jax.jit(lambda v: v + 1), (np.zeros(3, np.float32),), {})
  assert np.allclose(compiled(np.zeros(3, np.float32)), 1.0)
  assert cache.outcomes == {}


def test_the_least_recently_used_programs_go_beyond_the_limit(tmp_path):
  for i, size in enumerate([300, 300, 300]):
    path = tmp_path / f"p{i}.jaxprog"
    path.write_bytes(b"x" * size)
    os.utime(path, (1000 + i, 1000 + i))
  os.utime(tmp_path / "p0.jaxprog", (2000, 2000))  # used last
  program_cache._evict(tmp_path, 650)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["p0.jaxprog", "p2.jaxprog"]
