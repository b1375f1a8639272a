"""jaxmed's XLA flags, set before JAX starts its backend, and only where they are safe.

An XLA flag in XLA_FLAGS that the installed jaxlib does not know aborts the process when the
backend starts (a fatal log, not an exception: a notebook's kernel just dies), and flags get
renamed between releases. So a flag is set only when
  - the CPU will run the computation (no GPU/TPU plugin installed, or JAX_PLATFORMS puts cpu
    first): the flags here are CPU-only, and
  - the installed jaxlib accepts it: probed once in a subprocess (`import jax; jax.devices()`
    with the flag), the answer cached per jaxlib version in $JAXMED_CACHE/xla_flags.json.
A flag that fails the probe is dropped with one line on stderr. JAXMED_XLA_DEFAULTS=0 sets
nothing; a flag the user already set in XLA_FLAGS is left as it is. `record()` is what
summary.json keeps under machine.xla_flags.
"""

import functools
import json
import os
import subprocess
import sys
from importlib import metadata

from jaxmed.runtime import settings
from jaxmed.runtime.paths import cache_dir

# Measured on a 2-core AVX-512 EPYC (shared/CPU_CONV_NOTES.md): routing convolutions back to XLA's
# own CPU kernels instead of YNNPACK was the fastest fp32 setting found (1x1 conv fb: 312 -> ~120 ms).
CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
ACCELERATOR_PLUGINS = ("jax-cuda", "jax-rocm", "libtpu", "jax-metal")
# Flags jaxmed itself added, passed on to a restarted process (the allocator restart), whose
# XLA_FLAGS then already holds them: they are still jaxmed's, not the user's.
_MARK = "JAXMED_XLA_FLAGS_SET"
_RECORD = {"set": [], "dropped": [], "reason": "not configured"}


@functools.lru_cache(maxsize=1)
def accelerator_plugin() -> str | None:
  """The installed JAX GPU/TPU plugin's distribution name, if any (read without importing JAX)."""
  for dist in metadata.distributions():
    name = (dist.metadata["Name"] or "").lower().replace("_", "-")
    if name.startswith(ACCELERATOR_PLUGINS):
      return name
  return None


def cpu_computes(environ=None, plugin: str | None = None) -> bool:
  """Whether JAX's default backend will be the CPU: JAX_PLATFORMS starts with cpu, or it is
  unset and no accelerator plugin is installed."""
  environ = os.environ if environ is None else environ
  platforms = [p.strip().lower() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return platforms[0] == "cpu"
  return plugin is None


def _jaxlib_version() -> str | None:
  try:
    return metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return None


def probe(flag: str) -> bool | None:
  """Whether a process with XLA_FLAGS=`flag` starts the CPU backend (run apart: a bad flag kills
  the process that tries it); None when the probe itself could not finish (not an answer)."""
  env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
  try:
    done = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return done.returncode == 0


def accepted(flag: str, cache_file=None) -> bool:
  """probe(flag), remembered per jaxlib version (a failed cache read or write only costs a probe)."""
  cache_file = cache_file or cache_dir() / "xla_flags.json"
  key = f"jaxlib {_jaxlib_version()} {flag}"
  try:
    known = json.loads(cache_file.read_text())
  except (OSError, ValueError):
    known = {}
  if key not in known:
    answer = probe(flag)
    if answer is None:  # a slow or failed start is no verdict on the flag: ask again next time
      return False
    known[key] = answer
    try:
      cache_file.parent.mkdir(parents=True, exist_ok=True)
      tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
      tmp.write_text(json.dumps(known, indent=1))
      tmp.replace(cache_file)
    except OSError:
      pass
  return bool(known[key])


def configure(flags=CPU_FLAGS) -> dict:
  """Appends each of `flags` to XLA_FLAGS where it is safe (see the module docstring)."""
  global _RECORD
  current = os.environ.get("XLA_FLAGS", "")
  if not settings.current().xla_defaults:
    _RECORD = {"set": [], "dropped": [], "reason": "JAXMED_XLA_DEFAULTS=0"}
  elif _jaxlib_version() is None:
    _RECORD = {"set": [], "dropped": [], "reason": "jaxlib is not installed"}
  elif not cpu_computes(plugin=accelerator_plugin()):
    _RECORD = {"set": [], "dropped": [], "reason": "an accelerator computes (CPU flags not needed)"}
  else:
    _RECORD = {"set": [], "dropped": [], "reason": "the CPU computes"}
    ours = os.environ.get(_MARK, "").split()
    for flag in flags:
      if flag in ours and flag in current.split():
        _RECORD["set"].append(flag)  # set by jaxmed before this process restarted itself
        continue
      if flag.split("=")[0] in current:
        continue  # the user's own setting wins
      if accepted(flag):
        current = f"{current} {flag}".strip()
        _RECORD["set"].append(flag)
      else:
        _RECORD["dropped"].append(flag)
        print(f"jaxmed: jaxlib {_jaxlib_version()} does not accept the XLA flag {flag}; "
              f"running without it", file=sys.stderr)
    os.environ["XLA_FLAGS"] = current
    os.environ[_MARK] = " ".join(_RECORD["set"])
  return record()


def record() -> dict:
  """What configure() did, and XLA_FLAGS as the process has it, for summary.json."""
  return {**_RECORD, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
