"""What a result needs beside it to be reproducible: versions, devices, a hash of the parameters."""

import hashlib
import os
import platform
import sys

import numpy as np

JAXMED_VERSION = "0.1.0"  # the package's version (pyproject.toml reads it from here)


def versions() -> dict:
  import flax
  import jax
  import jaxlib
  import optax
  return {"jaxmed": JAXMED_VERSION, "python": sys.version.split()[0], "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
          "numpy": np.__version__}


def machine() -> dict:
  """The host, its devices and allocator, and jaxmed's runtime switches (`settings`)."""
  import jax
  from jaxmed.runtime import settings, xla_flags
  from jaxmed.runtime.platform import loaded_allocator, transparent_hugepage_mode
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "transparent_hugepages": transparent_hugepage_mode(),
          "allocator": loaded_allocator(), "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
          "settings": settings.current().as_record(), "xla_flags": xla_flags.record()}


def process_age_s() -> float | None:
  """Seconds since this process started (interpreter start-up included), from /proc; None where
  there is no /proc. Recorded as the time to the first train step (summary.json timings)."""
  try:
    with open("/proc/self/stat") as f:  # field 22, counted after the ')' that ends the name
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def params_sha256(tree) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes, in sorted path order."""
  import jax
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()
