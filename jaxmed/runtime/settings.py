"""jaxmed's runtime switches, read from the environment once per process.

| field        | variable            | values                              | default |
|--------------|---------------------|-------------------------------------|---------|
| conv_impl    | JAXMED_CONV_IMPL    | auto, lax, fast                     | auto    |
| bfloat16     | JAXMED_BFLOAT16     | auto, on, off                       | auto    |
| xla_defaults | JAXMED_XLA_DEFAULTS | 1/0 (true/false, yes/no, on/off)    | 1       |
| allocator    | JAXMED_ALLOCATOR    | auto, mimalloc, glibc, system       | auto    |
| debug        | JAXMED_DEBUG        | 1/0 (as above)                      | 0       |
| cache_dir    | JAXMED_CACHE        | a directory (`paths.cache_dir()`)   |         |

Reading them once matters for the ops: conv2d and max_pool choose their kernel while JAX traces, and
a value read from os.environ at each trace is in no jit cache key, so a program compiled under one
value could be reused under another. Here the value is fixed when first read (`import jaxmed` does
that), and `override` - for tests - clears JAX's caches on entry and exit. An empty variable counts
as unset; a value not in the table raises ValueError at that first read, so at `import jaxmed`. The distributed launch variables (JAXMED_COORDINATOR, ...) stay in runtime/distributed.py:
they describe the launch, not how jaxmed computes.

JAXMED_BFLOAT16 decides what `model.dtype='auto'` becomes on a CPU and whether bfloat16 dense
convolutions run as float32-accumulating matrix products (ops/gemm_conv.py, ops/winograd.py):
auto follows the measured probe (runtime/matrix_units.py: an AMX unit whose bfloat16 product is
>= 2x float32), on forces both (to test them on any CPU), off never picks bfloat16 for 'auto'.
"""

import contextlib
import dataclasses
import os
import threading
from typing import Mapping

CONV_IMPLS = ("auto", "lax", "fast")
BFLOAT16 = ("auto", "on", "off")
ALLOCATORS = ("auto", "mimalloc", "glibc", "system")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

# field -> environment variable; the variable is what a user sets, so errors name it.
VARIABLES = {"conv_impl": "JAXMED_CONV_IMPL", "bfloat16": "JAXMED_BFLOAT16",
             "xla_defaults": "JAXMED_XLA_DEFAULTS",
             "allocator": "JAXMED_ALLOCATOR", "debug": "JAXMED_DEBUG", "cache_dir": "JAXMED_CACHE"}
_CHOICES = {"conv_impl": CONV_IMPLS, "bfloat16": BFLOAT16, "allocator": ALLOCATORS}


@dataclasses.dataclass(frozen=True)
class Settings:
  conv_impl: str = "auto"     # conv2d/max_pool kernels: auto (CPU fast paths on CPU), lax, fast
  bfloat16: str = "auto"      # model.dtype='auto' and bfloat16 GEMM convs: auto (probe), on, off
  xla_defaults: bool = True   # add jaxmed's CPU XLA flag to XLA_FLAGS at import
  allocator: str = "auto"     # host malloc the command line entry points restart with
  debug: bool = False         # extra checks and messages, for code that wants them
  # Where weights, datasets and the compile cache go; recorded only: paths.cache_dir() stays the
  # source (it reads JAXMED_CACHE at each call), so `current` fills this in from it.
  cache_dir: str | None = None

  def __post_init__(self):
    # Checked here so that an override is validated exactly as the environment is.
    for field in _CHOICES:
      _check(field, getattr(self, field))
    for field in ("xla_defaults", "debug"):
      if not isinstance(getattr(self, field), bool):
        raise ValueError(f"{VARIABLES[field]}: expected a bool, got {getattr(self, field)!r}")

  def as_record(self) -> dict:
    """The settings as plain JSON values, keyed by field, for summary.json."""
    return dataclasses.asdict(self)


def _check(field: str, value) -> None:
  allowed = _CHOICES[field]
  if value not in allowed:
    raise ValueError(f"{VARIABLES[field]}={value!r}: expected one of {', '.join(allowed)}")


def choice(environ: Mapping[str, str], field: str) -> str:
  """The checked value of one choice variable (conv_impl, allocator) in `environ`."""
  value = (environ.get(VARIABLES[field]) or _CHOICES[field][0]).strip().lower()
  _check(field, value)
  return value


def _flag(environ: Mapping[str, str], field: str, default: bool) -> bool:
  value = (environ.get(VARIABLES[field]) or "").strip().lower()
  if not value:
    return default
  if value not in _TRUE + _FALSE:
    raise ValueError(f"{VARIABLES[field]}={value!r}: expected one of {', '.join(_TRUE + _FALSE)}")
  return value in _TRUE


def from_environ(environ: Mapping[str, str]) -> Settings:
  """Parses and checks the switches in `environ`, uncached; cache_dir stays None (see current)."""
  return Settings(conv_impl=choice(environ, "conv_impl"), bfloat16=choice(environ, "bfloat16"),
                  xla_defaults=_flag(environ, "xla_defaults", True),
                  allocator=choice(environ, "allocator"), debug=_flag(environ, "debug", False))


_lock = threading.Lock()
_current: Settings | None = None


def current() -> Settings:
  """This process's settings: read from os.environ on the first call, then fixed."""
  global _current
  with _lock:
    if _current is None:
      from jaxmed.runtime import paths
      _current = dataclasses.replace(from_environ(os.environ), cache_dir=str(paths.cache_dir()))
    return _current


@contextlib.contextmanager
def override(**changes):
  """Replaces fields of `current()` inside a `with` block (tests), e.g. override(conv_impl="lax").

  JAX's caches are cleared on entry and exit: a function jitted under the old value would
  otherwise keep running the kernels that value chose. Only switches read after start-up take
  effect (conv_impl); xla_defaults and allocator were applied when the process began.
  """
  global _current
  import jax
  previous = current()
  # An unknown field raises TypeError, a bad value ValueError, before anything changes.
  replaced = dataclasses.replace(previous, **changes)
  with _lock:
    _current = replaced
  jax.clear_caches()
  try:
    yield replaced
  finally:
    with _lock:
      _current = previous
    jax.clear_caches()
