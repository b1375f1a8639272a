"""When `python -m jaxmed.train` restarts itself with a faster host allocator (jaxmed/runtime/platform.py)."""

import pytest

from jaxmed.runtime.platform import (allocator_environment, hugepage_environment, loaded_allocator,
                             mimalloc_library, transparent_hugepage_mode)

GLIBC = ("glibc", "2.36")


def test_madvise_kernel_and_new_glibc_get_the_tunable():
  env = hugepage_environment({"PATH": "/bin"}, "madvise", GLIBC)
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_the_users_own_tunables_are_kept():
  env = hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", GLIBC)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ, thp, libc", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", GLIBC),  # the user chose already
    ({}, "always", GLIBC),                                            # huge pages without asking
    ({}, "never", GLIBC),                                             # none to be had
    ({}, None, GLIBC),                                                # no THP file (not Linux)
    ({}, "madvise", ("glibc", "2.31")),                               # tunable added in 2.35
    ({}, "madvise", ("", "")),                                        # musl and others
])
def test_no_restart_when_it_cannot_help_or_was_declined(environ, thp, libc):
  assert hugepage_environment(environ, thp, libc) is None


def test_thp_mode_is_the_bracketed_word(tmp_path):
  f = tmp_path / "enabled"
  f.write_text("always [madvise] never\n")
  assert transparent_hugepage_mode(str(f)) == "madvise"
  assert transparent_hugepage_mode(str(tmp_path / "missing")) is None


MI = "/site/cmeel.prefix/lib/libmimalloc.so.3"


def test_mimalloc_is_preloaded_with_purging_off_when_installed():
  env = allocator_environment({"PATH": "/bin"}, "madvise", GLIBC, MI)
  assert env == {"PATH": "/bin", "LD_PRELOAD": MI, "MIMALLOC_PURGE_DELAY": "-1",
                 "MIMALLOC_ALLOW_LARGE_OS_PAGES": "1"}


def test_the_users_preloads_and_mimalloc_options_are_kept():
  env = allocator_environment({"LD_PRELOAD": "/x/libfoo.so", "MIMALLOC_PURGE_DELAY": "100"},
                              "madvise", GLIBC, MI)
  assert env["LD_PRELOAD"] == f"{MI}:/x/libfoo.so"
  assert env["MIMALLOC_PURGE_DELAY"] == "100"


def test_with_a_gpu_plugin_auto_keeps_glibc_unless_jax_is_told_to_use_the_cpu():
  tunable = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  assert allocator_environment({}, "madvise", GLIBC, MI, "jax-cuda13-plugin") == tunable
  env = allocator_environment({"JAX_PLATFORMS": "cpu"}, "madvise", GLIBC, MI, "jax-cuda13-plugin")
  assert env["LD_PRELOAD"] == MI
  env = allocator_environment({"JAXMED_ALLOCATOR": "mimalloc"}, "madvise", GLIBC, MI, "libtpu")
  assert env["LD_PRELOAD"] == MI


def test_without_mimalloc_glibc_gets_the_huge_page_tunable():
  assert allocator_environment({}, "madvise", GLIBC, None) == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  assert allocator_environment({"JAXMED_ALLOCATOR": "glibc"}, "madvise", GLIBC, MI) == {
      "JAXMED_ALLOCATOR": "glibc", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


@pytest.mark.parametrize("environ", [
    {"JAXMED_ALLOCATOR": "system"},                        # opted out
    {"LD_PRELOAD": MI},                                    # already restarted
    {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},           # the user's own allocator
])
def test_no_restart_when_declined_or_done(environ):
  assert allocator_environment(environ, "madvise", GLIBC, MI) is None


def test_an_unknown_allocator_name_is_an_error_naming_the_choices():
  with pytest.raises(ValueError, match="JAXMED_ALLOCATOR='tcmalloc'.*auto, mimalloc, glibc, system"):
    allocator_environment({"JAXMED_ALLOCATOR": "tcmalloc"}, "madvise", GLIBC, MI)


def test_loaded_allocator_reads_the_mapped_libraries(tmp_path):
  maps = tmp_path / "maps"
  maps.write_text("7f00-7f01 r-xp 0 00:00 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
  assert loaded_allocator(str(maps)) == "glibc"
  maps.write_text(maps.read_text() + f"7f02-7f03 r-xp 0 00:00 2 {MI}\n")
  assert loaded_allocator(str(maps)) == "mimalloc"
  assert loaded_allocator(str(tmp_path / "missing")) is None


def test_the_installed_mimalloc_preloads_under_jax():
  import os
  import platform
  import subprocess
  import sys
  if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
    pytest.skip("cmeel-mimalloc is a dependency on Linux x86_64 only")
  path = mimalloc_library()
  assert path is not None, "pyproject.toml installs cmeel-mimalloc on Linux x86_64"
  env = allocator_environment({**os.environ, "JAXMED_ALLOCATOR": "mimalloc"}, None, ("", ""), path)
  code = ("import jax.numpy as jnp; from jaxmed.runtime.platform import loaded_allocator; "
          "x = jnp.ones((512, 512)); print(loaded_allocator(), float((x @ x).sum()))")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["mimalloc", str(512.0 ** 3)]
