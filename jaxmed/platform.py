"""Process-level choices made before JAX initialises: XLA flags and transparent huge pages."""

import os
import platform
import sys

# Measured on a 2-core AVX-512 EPYC (shared/CPU_CONV_NOTES.md): routing convolutions back to XLA's
# own CPU kernels instead of YNNPACK was the fastest fp32 setting found (1x1 conv fb: 312 -> ~120 ms).
_CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"

# XLA CPU mallocs every large buffer afresh for each step; glibc serves those from new mmaps, so each
# step page-faults its activations in 4 KiB at a time (a 50 MB elementwise op: 21 ms, 3.7 ms without
# the faults). With this glibc tunable malloc asks the kernel for 2 MiB pages (madvise): MobileNetV2
# 128 px training step 885/663/825 -> 508/521/468 ms in alternating processes (benchmarks/RESULTS.md).
_HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def configure_xla_flags() -> None:
  """Adds jaxmed's CPU XLA flag unless the user opted out or already chose one.

  Set JAXMED_XLA_DEFAULTS=0 to leave XLA_FLAGS untouched. Has no effect once the JAX backend is up,
  which is why `jaxmed/__init__.py` calls it on import.
  """
  if os.environ.get("JAXMED_XLA_DEFAULTS", "1") == "0":
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + _CPU_CONV_FLAG).strip()


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
  """The environment to restart the process with so malloc uses huge pages, or None if there is
  nothing to do: opted out (JAXMED_HUGEPAGES=0), already set, not glibc >= 2.35 (the tunable's
  first release), or a kernel whose THP mode is not 'madvise' ('always' already gives huge pages;
  'never' cannot)."""
  if environ.get("JAXMED_HUGEPAGES", "1") == "0":
    return None
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


def restart_with_hugepages() -> None:
  """Re-executes this command line with malloc's huge-page tunable set, when it would help.

  glibc reads GLIBC_TUNABLES only at process start, so a command line entry point calls this first
  thing (the same PID, arguments and environment otherwise). Interactive sessions cannot restart:
  start Python/Jupyter with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 to get the same effect.
  """
  if not sys.platform.startswith("linux"):
    return
  env = hugepage_environment(os.environ, transparent_hugepage_mode(), platform.libc_ver())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
