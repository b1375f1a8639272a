"""Where jaxmed keeps files it makes for the user: weights, generated datasets, compile cache."""

import os
from pathlib import Path


def cache_dir() -> Path:
  """$JAXMED_CACHE, else $XDG_CACHE_HOME/jaxmed, else ~/.cache/jaxmed."""
  if os.environ.get("JAXMED_CACHE"):
    return Path(os.environ["JAXMED_CACHE"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base).expanduser() / "jaxmed"
