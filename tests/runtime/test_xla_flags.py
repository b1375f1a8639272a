"""jaxmed never puts an XLA flag into XLA_FLAGS that the installed jaxlib rejects (a rejected
flag would abort the process), and sets CPU flags only where the CPU computes."""

import json
import os
import subprocess
import sys

from jaxmed.runtime import xla_flags

BOGUS = "--xla_jaxmed_test_flag_that_does_not_exist=1"


def _python(code: str, **env) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXMED_XLA_FLAGS_SET")}
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                        env={**environ, **env})


def test_every_flag_jaxmed_sets_starts_jax(tmp_path):
  done = _python("import json, jaxmed; from jaxmed.runtime import xla_flags; "
                 "print(json.dumps(xla_flags.record()))", JAXMED_CACHE=str(tmp_path))
  assert done.returncode == 0, done.stderr
  record = json.loads(done.stdout.splitlines()[-1])
  assert record["set"] == list(xla_flags.CPU_FLAGS) or record["dropped"]  # all set, or said why
  for flag in record["set"] + [record["XLA_FLAGS"]]:  # each alone, then all of them together
    started = _python("import jax; jax.devices()", XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    assert started.returncode == 0, (flag, started.stderr[-500:])
  assert json.loads((tmp_path / "xla_flags.json").read_text())  # the probe's answer is cached


def test_a_rejected_flag_is_dropped_with_one_line_and_the_run_goes_on(tmp_path):
  done = _python(f"from jaxmed.runtime import xla_flags; r = xla_flags.configure(({BOGUS!r},)); "
                 "import jax; print(jax.devices()[0].platform, r['dropped'])",
                 JAXMED_CACHE=str(tmp_path))
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split()[0] == "cpu" and BOGUS in done.stdout
  lines = [l for l in done.stderr.splitlines() if "does not accept" in l]
  assert len(lines) == 1 and BOGUS in lines[0]
  assert "Traceback" not in done.stderr


def test_the_probe_tells_a_bad_flag_from_a_good_one(tmp_path):
  cache = tmp_path / "flags.json"
  assert not xla_flags.accepted(BOGUS, cache)
  assert xla_flags.accepted("--xla_force_host_platform_device_count=2", cache)
  assert len(json.loads(cache.read_text())) == 2


def test_no_cpu_flag_where_an_accelerator_computes(tmp_path):
  assert xla_flags.cpu_computes({}, plugin=None)
  assert not xla_flags.cpu_computes({}, plugin="jax-cuda12-plugin")
  assert xla_flags.cpu_computes({"JAX_PLATFORMS": "cpu"}, plugin="libtpu")
  assert not xla_flags.cpu_computes({"JAX_PLATFORMS": "tpu,cpu"}, plugin=None)
  for platform in ("tpu", "cuda"):
    done = _python("import os, jaxmed; print(repr(os.environ.get('XLA_FLAGS', '')))",
                   JAX_PLATFORMS=platform, JAXMED_CACHE=str(tmp_path))
    assert done.returncode == 0 and done.stdout.strip() == "''", done


def test_an_absent_declared_accelerator_fails_with_jaxs_own_message():
  for platform in ("tpu", "cuda"):
    plain = _python("import jax; jax.devices()", JAX_PLATFORMS=platform)
    ours = _python("import jaxmed, jax; jax.devices()", JAX_PLATFORMS=platform)
    assert plain.returncode == ours.returncode != 0
    assert ours.stderr.strip().splitlines()[-1] == plain.stderr.strip().splitlines()[-1]
    assert "Unknown flag" not in ours.stderr


def test_a_restarted_process_records_the_flags_jaxmed_set(tmp_path):
  first = _python("import json, os, jaxmed; print(json.dumps(dict(os.environ)))",
                  JAXMED_CACHE=str(tmp_path))
  env = json.loads(first.stdout.splitlines()[-1])  # what a restart inherits
  second = subprocess.run([sys.executable, "-c", "import json, jaxmed; from jaxmed.runtime import "
                           "xla_flags; print(json.dumps(xla_flags.record()))"],
                          capture_output=True, text=True, env=env, timeout=300)
  record = json.loads(second.stdout.splitlines()[-1])
  assert record["set"] == list(xla_flags.CPU_FLAGS)
