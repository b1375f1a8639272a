"""jaxmed.runtime.settings: the switches are parsed and checked once, overrides restore the value
and clear JAX's caches, and the record goes into summary.json as plain JSON."""

import json

import jax
import pytest

from jaxmed.runtime import run_info, settings


def test_defaults():
  s = settings.from_environ({})
  assert (s.conv_impl, s.xla_defaults, s.allocator, s.debug) == ("auto", True, "auto", False)


def test_parsing():
  s = settings.from_environ({"JAXMED_CONV_IMPL": " LAX ", "JAXMED_XLA_DEFAULTS": "0",
                             "JAXMED_ALLOCATOR": "glibc", "JAXMED_DEBUG": "yes",
                             "JAXMED_BFLOAT16": "On"})
  assert (s.conv_impl, s.xla_defaults, s.allocator, s.debug, s.bfloat16) == \
      ("lax", False, "glibc", True, "on")
  assert settings.from_environ({}).bfloat16 == "auto"
  assert settings.from_environ({"JAXMED_DEBUG": "off", "JAXMED_XLA_DEFAULTS": "true"}).debug is False
  # An empty variable counts as unset.
  assert settings.from_environ({"JAXMED_CONV_IMPL": "", "JAXMED_XLA_DEFAULTS": ""}) == \
      settings.from_environ({})


@pytest.mark.parametrize("environ, message", [
    ({"JAXMED_CONV_IMPL": "bogus"}, "JAXMED_CONV_IMPL='bogus': expected one of auto, lax, fast"),
    ({"JAXMED_ALLOCATOR": "tcmalloc"}, "JAXMED_ALLOCATOR='tcmalloc'.*auto, mimalloc, glibc, system"),
    ({"JAXMED_DEBUG": "maybe"}, "JAXMED_DEBUG='maybe': expected one of 1, true"),
    ({"JAXMED_XLA_DEFAULTS": "2"}, "JAXMED_XLA_DEFAULTS='2'"),
    ({"JAXMED_BFLOAT16": "always"}, "JAXMED_BFLOAT16='always': expected one of auto, on, off"),
])
def test_unknown_values_name_the_variable_and_the_choices(environ, message):
  with pytest.raises(ValueError, match=message):
    settings.from_environ(environ)


def test_current_is_read_once(monkeypatch):
  first = settings.current()
  monkeypatch.setenv("JAXMED_CONV_IMPL", "fast" if first.conv_impl != "fast" else "lax")
  assert settings.current() is first  # a later change of the environment is not seen
  assert first.cache_dir  # recorded from paths.cache_dir()


def test_override_sets_and_restores(monkeypatch):
  cleared = []
  real = jax.clear_caches
  monkeypatch.setattr(jax, "clear_caches", lambda: (cleared.append(1), real()))
  before = settings.current()
  with settings.override(conv_impl="lax", debug=True) as s:
    assert settings.current() is s and (s.conv_impl, s.debug) == ("lax", True)
    assert s.allocator == before.allocator  # the other fields are kept
    with settings.override(conv_impl="fast"):
      assert settings.current().conv_impl == "fast" and settings.current().debug
    assert settings.current() is s
  assert settings.current() is before
  assert len(cleared) == 4  # entry and exit of both blocks


def test_override_restores_after_an_exception():
  before = settings.current()
  with pytest.raises(RuntimeError):
    with settings.override(conv_impl="lax"):
      raise RuntimeError
  assert settings.current() is before


def test_override_checks_values_and_fields():
  before = settings.current()
  with pytest.raises(ValueError, match="JAXMED_CONV_IMPL='slow'"):
    with settings.override(conv_impl="slow"):
      pass
  with pytest.raises(ValueError, match="JAXMED_DEBUG"):
    with settings.override(debug="1"):
      pass
  with pytest.raises(TypeError):
    with settings.override(no_such_field=1):
      pass
  assert settings.current() is before


def test_record_is_json_and_in_machine():
  record = settings.current().as_record()
  assert set(record) == {"conv_impl", "bfloat16", "xla_defaults", "allocator", "debug",
                         "cache_dir"}
  assert json.loads(json.dumps(record)) == record
  with settings.override(conv_impl="lax"):
    machine = run_info.machine()
  assert machine["settings"]["conv_impl"] == "lax"
  json.dumps(machine)
