"""What every command line shares: flags parsed without absl's global registry (importing a
command module defines nothing, so all of jaxmed imports into one notebook kernel), configs by
name or path, one error path (a user's mistake is one line and exit status 2, a traceback only
for jaxmed's own bugs or with JAXMED_DEBUG=1), and command modules that are also callable."""

import functools
import os
import sys
import types

from absl import flags


class UserError(Exception):
  """A mistake the user can fix: printed as `error: <message>`, exit status 2."""


def debug() -> bool:
  """JAXMED_DEBUG (1/true/yes/on), as runtime/settings.py parses it."""
  from jaxmed.runtime import settings
  return settings.current().debug


def command(main):
  """Decorates a command's `main(argv) -> int`: argv defaults to sys.argv[1:], and a UserError
  (or a config or flag error) prints `error: <one line>` on stderr and returns 2; with --debug
  or JAXMED_DEBUG=1 it raises with its traceback instead. Anything else is a bug in jaxmed and
  keeps its traceback."""
  @functools.wraps(main)
  def run(argv=None) -> int:
    from jaxmed.runtime.config_files import ConfigNotFound
    argv = sys.argv[1:] if argv is None else list(argv)
    show_traceback = debug() or "--debug" in argv  # every command takes --debug
    try:
      return main([a for a in argv if a != "--debug"]) or 0
    except (UserError, ConfigNotFound, flags.Error) as e:
      if show_traceback:
        raise
      text = str(e).strip()
      print(f"error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
      return 2
  return run


def parse_config_flags(argv: list[str], prog: str, define=None) -> flags.FlagValues:
  """Parses `--config NAME|PATH[:ARG]`, `--config.KEY=VALUE` overrides and the flags `define`
  adds, into a private FlagValues. `--config` may be a shipped config's name (jaxmed.configs)."""
  from ml_collections import config_flags
  from jaxmed.runtime import config_files
  argv = list(argv)
  for i, arg in enumerate(argv):  # a shipped config's name becomes its installed file's path
    if arg == "--config" and i + 1 < len(argv):
      argv[i + 1] = config_files.resolve(argv[i + 1])
    elif arg.startswith("--config="):
      argv[i] = "--config=" + config_files.resolve(arg.split("=", 1)[1])
  check_override_keys(argv)
  argv = [prog] + argv
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "a shipped config's name or a config file",
                                  flag_values=values, sys_argv=argv)
  if define:
    define(values)
  values(argv)
  if values.config is None:
    raise UserError(f"--config is required, e.g. {prog} --config demo "
                    f"(shipped: {', '.join(config_files.shipped())})")
  return values


def _flat_keys(tree, prefix="") -> list[str]:
  keys = []
  for k, v in tree.items():
    keys.append(prefix + k)
    if isinstance(v, dict):
      keys += _flat_keys(v, f"{prefix}{k}.")
  return keys


def check_override_keys(argv: list[str]):
  """Every `--config.KEY=VALUE` names a field the config has (a typo would otherwise end an
  AttributeError traceback); the message names the nearest field."""
  from jaxmed.runtime import config_files
  from jaxmed.runtime.suggest import nearest
  spec = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None) or next(
      (a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  overrides = [a.split("=", 1)[0].removeprefix("--config.") for a in argv
               if a.startswith("--config.")]
  if not spec or not overrides:
    return
  keys = _flat_keys(config_files.load(spec).to_dict())
  for key in overrides:
    if key not in keys:
      near = nearest(key, keys)
      raise UserError(f"--config.{key}: the config has no field {key!r}"
                      + (f"; did you mean --config.{near}?" if near else
                         f" (its sections: {', '.join(k for k in keys if '.' not in k)})"))


def config_path(values: flags.FlagValues) -> str:
  from ml_collections import config_flags
  return config_flags.get_config_filename(values["config"])


def make_callable(module_name: str, function):
  """Lets `jaxmed.<command>(...)` call the Python API even after `import jaxmed.<command>` has
  bound the command module to that name (Python sets a submodule as its package's attribute)."""
  module = sys.modules[module_name]

  class CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
      return function(*args, **kwargs)

  module.__class__ = CallableModule
