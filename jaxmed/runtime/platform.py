"""The host memory allocator, chosen before JAX initialises (XLA flags: runtime/xla_flags.py)."""

import os
import platform
import sys

from jaxmed.runtime import settings
from jaxmed.runtime.xla_flags import accelerator_plugin

# XLA CPU mallocs every large buffer afresh for each step (there is no buffer pool on the host), and
# glibc returns big blocks to the kernel at once. Two costs follow, both measured on this project's
# 2-core KVM machine (benchmarks/RESULTS.md): each step page-faults its activations back in, 4 KiB at
# a time (a 50 MB elementwise op: 21 ms, 3.7 ms without the faults), and on a VM with free page
# reporting (virtio-balloon) memory left free for ~2 s is handed to the hypervisor, so the first
# step after any pause faults it in from the host (1.6 GB re-touched at once: 0.23-0.65 s, after
# a 3-5 s pause 1.2-2.0 s; kept inside the process: 0.07-0.1 s). mimalloc with purging off keeps
# freed memory in the process, so neither happens; where it is not installed, glibc's huge-page
# tunable at least makes each fault 2 MiB (MobileNetV2 128 px step 885/663/825 -> 508/521/468 ms).
_HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
_MIMALLOC_OPTIONS = {"MIMALLOC_PURGE_DELAY": "-1",            # never give freed memory back
                     "MIMALLOC_ALLOW_LARGE_OS_PAGES": "1"}    # and ask for 2 MiB pages (madvise)
ALLOCATORS = settings.ALLOCATORS
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_hugepage_mode(path: str = _THP_ENABLED) -> str | None:
  """The kernel's THP mode ('always', 'madvise', 'never'), or None where it cannot be read."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  for word in text.split():
    if word.startswith("[") and word.endswith("]"):
      return word[1:-1]
  return None


def hugepage_environment(environ, thp_mode: str | None, libc: tuple[str, str]) -> dict | None:
  """The environment to restart the process with so glibc's malloc uses huge pages, or None if
  there is nothing to do: already set, not glibc >= 2.35 (the tunable's first release), or a kernel
  whose THP mode is not 'madvise' ('always' already gives huge pages; 'never' cannot)."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb" in tunables or thp_mode != "madvise":
    return None
  name, version = libc
  try:
    major_minor = tuple(int(p) for p in version.split(".")[:2])
  except ValueError:
    return None
  if name != "glibc" or major_minor < (2, 35):
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{tunables}:{_HUGEPAGE_TUNABLE}" if tunables else _HUGEPAGE_TUNABLE
  return env


def mimalloc_library() -> str | None:
  """The path of the mimalloc shared library the `cmeel-mimalloc` wheel installs, or None."""
  from importlib import metadata
  try:
    dist = metadata.distribution("cmeel-mimalloc")
  except metadata.PackageNotFoundError:
    return None
  for f in dist.files or ():
    if f.name.startswith("libmimalloc.so"):
      path = str(dist.locate_file(f))
      if os.path.isfile(path):
        return path
  return None


def allocator_environment(environ, thp_mode: str | None, libc: tuple[str, str],
                          mimalloc: str | None, accelerator: str | None = None) -> dict | None:
  """The environment to restart the process with for a faster host allocator, or None.

  JAXMED_ALLOCATOR picks: `auto` (default) preloads mimalloc when it is installed and JAX will run
  on the CPU, else sets glibc's huge-page tunable where that helps; `mimalloc` / `glibc` ask for
  one of them; `system` leaves the process alone. With a GPU/TPU plugin installed (`accelerator`)
  and JAX_PLATFORMS not 'cpu', `auto` skips mimalloc: the step's buffers live on the device there,
  and keeping freed host memory only costs RAM (MobileNetV2 224 px on an H100: the same img/s,
  host peak 4.4 GB instead of 2.9). A user's own LD_PRELOAD of an allocator is respected.
  """
  # From `environ`, not settings.current(): this decides the environment of a process to come.
  choice = settings.choice(environ, "allocator")
  if choice == "system":
    return None
  preload = environ.get("LD_PRELOAD", "")
  if "malloc" in preload:  # ours after the restart, or the user's own allocator
    return None
  on_accelerator = accelerator and environ.get("JAX_PLATFORMS", "").lower() != "cpu"
  if mimalloc and (choice == "mimalloc" or (choice == "auto" and not on_accelerator)):
    return mimalloc_environment(environ, mimalloc)
  if choice == "mimalloc":
    print("jaxmed: JAXMED_ALLOCATOR=mimalloc but the cmeel-mimalloc package is not installed "
          "(pip install cmeel-mimalloc); using glibc's malloc", file=sys.stderr)
  return hugepage_environment(environ, thp_mode, libc)


def mimalloc_environment(environ, library: str) -> dict:
  """`environ` with `library` preloaded first and jaxmed's mimalloc options (the user's kept)."""
  env = dict(environ)
  preload = environ.get("LD_PRELOAD", "")
  env["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
  for key, value in _MIMALLOC_OPTIONS.items():
    env.setdefault(key, value)
  return env


def loaded_allocator(maps: str = "/proc/self/maps") -> str | None:
  """Which malloc this process really runs: 'mimalloc', 'jemalloc', 'tcmalloc' or 'glibc' (None
  where /proc is missing). Read from the mapped libraries, so a preload that failed shows."""
  try:
    with open(maps) as f:
      text = f.read()
  except OSError:
    return None
  for name in ("mimalloc", "jemalloc", "tcmalloc"):
    if f"lib{name}" in text:
      return name
  return "glibc"


def restart_with_fast_allocator() -> None:
  """Re-executes this command line with a faster host allocator, when that would help.

  The dynamic loader reads LD_PRELOAD and glibc reads GLIBC_TUNABLES only at process start, so a
  command line entry point calls this first thing (same PID and arguments). Interactive sessions
  cannot restart: start Python/Jupyter with the variables `allocator_environment` sets, e.g.
  `LD_PRELOAD=$(python -c "import jaxmed.runtime.platform as p; print(p.mimalloc_library())")
  MIMALLOC_PURGE_DELAY=-1 jupyter lab`.
  """
  if not sys.platform.startswith("linux"):
    return
  env = allocator_environment(os.environ, transparent_hugepage_mode(), platform.libc_ver(),
                              mimalloc_library(), accelerator_plugin())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
