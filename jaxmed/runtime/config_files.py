"""Configs chosen in one place: by the name of a shipped config (`demo`, `brain_tumor_mri`, ...:
the modules of `jaxmed.configs`, which is the repository's top-level configs/ folder) or by the
path of a user's .py file, either followed by `:ARG`, which is passed to `get_config(ARG)`
(`tpu:chest_xray` puts the TPU overlay on the chest X-ray config)."""

import importlib
import importlib.util
import pkgutil
from pathlib import Path

import ml_collections

from jaxmed.runtime.suggest import nearest


class ConfigNotFound(ValueError):
  pass


def shipped() -> list[str]:
  """Names of the configs that ship with jaxmed."""
  import jaxmed.configs
  return sorted(m.name for m in pkgutil.iter_modules(jaxmed.configs.__path__) if not m.ispkg)


def _split(spec: str) -> tuple[str, str | None]:
  name, sep, arg = str(spec).partition(":")
  return name, (arg if sep else None)


def _is_path(name: str) -> bool:
  return name.endswith(".py") or "/" in name or "\\" in name


def resolve(spec: str) -> str:
  """`PATH[:ARG]` of the config file a spec names; a shipped name becomes its installed file."""
  name, arg = _split(spec)
  if _is_path(name):
    path = Path(name).expanduser()
    if not path.is_file():
      raise ConfigNotFound(f"config file {name} not found; pass a .py file or a shipped config "
                           f"name ({', '.join(shipped())})")
  else:
    names = shipped()
    if name not in names:
      near = nearest(name, names)
      hint = f"did you mean {near!r}? " if near else ""
      raise ConfigNotFound(f"no shipped config named {name!r}; {hint}shipped: {', '.join(names)}"
                           f"; or pass the path of a .py file")
    path = Path(importlib.util.find_spec(f"jaxmed.configs.{name}").origin)  # found, not run
  return str(path) + (f":{arg}" if arg is not None else "")


def load(spec: str) -> ml_collections.ConfigDict:
  """The ConfigDict of a shipped config name or a config file path (with an optional `:ARG`)."""
  name, arg = _split(spec)
  resolve(spec)  # the same checks and messages as the command line
  if _is_path(name):
    path = Path(name).expanduser()
    module_spec = importlib.util.spec_from_file_location(f"jaxmed_user_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  else:
    module = importlib.import_module(f"jaxmed.configs.{name}")
  return module.get_config(arg) if arg is not None else module.get_config()


def stem(spec: str) -> str:
  """A short name for default workdirs: `runs/<stem>-<time>`."""
  return Path(_split(spec)[0]).stem
