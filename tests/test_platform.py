"""When `python -m jaxmed.train` restarts itself with malloc's huge-page tunable (jaxmed/platform.py)."""

import pytest

from jaxmed.platform import hugepage_environment, transparent_hugepage_mode

GLIBC = ("glibc", "2.36")


def test_madvise_kernel_and_new_glibc_get_the_tunable():
  env = hugepage_environment({"PATH": "/bin"}, "madvise", GLIBC)
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_the_users_own_tunables_are_kept():
  env = hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", GLIBC)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ, thp, libc", [
    ({"JAXMED_HUGEPAGES": "0"}, "madvise", GLIBC),                    # opted out
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
