"""Where jaxmed keeps files it makes for the user: weights, generated datasets, compile cache."""

import os
import shutil
from pathlib import Path


def cache_dir() -> Path:
  """$JAXMED_CACHE, else $XDG_CACHE_HOME/jaxmed, else ~/.cache/jaxmed."""
  if os.environ.get("JAXMED_CACHE"):
    return Path(os.environ["JAXMED_CACHE"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base).expanduser() / "jaxmed"


def evict_least_recent(entries, max_bytes: int) -> None:
  """Removes the least recently used (oldest modification time) of `entries`, files or folders of
  files, until the rest hold at most `max_bytes`. Several runs may share a cache: an entry that
  another run removed meanwhile is skipped."""
  sized = []
  for entry in entries:
    try:
      files = list(entry.iterdir()) if entry.is_dir() else [entry]
      sized.append((entry.stat().st_mtime, sum(f.stat().st_size for f in files), entry))
    except FileNotFoundError:
      continue
  total = sum(size for _, size, _ in sized)
  for _, size, entry in sorted(sized):
    if total <= max_bytes:
      break
    if entry.is_dir():
      shutil.rmtree(entry, ignore_errors=True)
    else:
      entry.unlink(missing_ok=True)
    total -= size
