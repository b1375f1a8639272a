"""Decoded images kept between runs: a second run on the same files skips decoding them.

Decoding is most of what a run does before its first step on a warm machine (the demo's 1,000
PNGs: 0.4-0.6 s of a 3 s start on 2 cores; a 5,000-image chest X-ray folder at 224 px takes
minutes), and a notebook user re-runs the same cell again and again. `folder.decode_files(...,
cache=True)` looks here first.

Kept in `$JAXMED_CACHE/decoded/<key>/` as `images.npy` (uint8, read back without pickle) and
`meta.json` (which files decoded, the messages of those that did not). The key is a sha256 of
the image size, the decoding code (a digest of jaxmed/data/folder.py, Pillow's version) and every
file's path, size and modification time (nanoseconds): a file replaced or touched misses, as in
`make`. Runs that check content against a manifest (`with_hash`) always read the files. Written
whole (a temporary folder renamed into place), least recently used folders evicted beyond
MAX_BYTES; a damaged entry is a miss and is removed. `data.decoded_cache=False` turns it off.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL

from jaxmed.data.files import FileList, Split
from jaxmed.runtime.paths import cache_dir, evict_least_recent

MAX_BYTES = 4 * 2**30
_FORMAT = 1
_FOLDER_PY = Path(__file__).with_name("folder.py")


def _stamp(ref) -> list | None:
  """(path, size, mtime_ns) of a file, or of the archive holding a member (`archive.zip::m`)."""
  ref = str(ref)
  path = ref.split("::", 1)[0]
  try:
    st = os.stat(path)
  except OSError:
    return None
  return [ref, st.st_size, st.st_mtime_ns]


def key(files: FileList, image_size: int) -> str | None:
  """The entry's name, or None where a file cannot be stat'ed (then nothing is cached)."""
  stamps = [_stamp(p) for p in files.paths]
  if any(s is None for s in stamps):
    return None
  code = hashlib.sha256(_FOLDER_PY.read_bytes()).hexdigest()
  text = json.dumps([_FORMAT, int(image_size), code, PIL.__version__, stamps])
  return hashlib.sha256(text.encode()).hexdigest()[:40]


def _root() -> Path:
  return cache_dir() / "decoded"


def load(files: FileList, image_size: int) -> tuple[Split, list[str]] | None:
  """What decode_files returned for these files last time, or None (a miss)."""
  name = key(files, image_size)
  entry = _root() / name if name else None
  if entry is None or not (entry / "meta.json").is_file():
    return None
  try:
    meta = json.loads((entry / "meta.json").read_text())
    images = np.load(entry / "images.npy", allow_pickle=False)
    kept = [int(i) for i in meta["kept"]]
    if images.dtype != np.uint8 or images.shape != (len(kept), image_size, image_size, 3):
      raise ValueError(f"unexpected images {images.dtype} {images.shape}")
    labels = np.asarray([files.labels[i] for i in kept], np.int32)
    split = Split(images, labels, [str(files.paths[i]) for i in kept], None)
    errors = [str(e) for e in meta["errors"]]
  except (OSError, ValueError, KeyError, TypeError, IndexError):  # damaged: decode again
    shutil.rmtree(entry, ignore_errors=True)
    return None
  os.utime(entry)  # recency, for eviction
  return split, errors


def store(files: FileList, image_size: int, split: Split, errors: list[str]) -> None:
  """Keeps a decode_files result; quietly does nothing where the cache cannot be written."""
  name = key(files, image_size)
  if name is None:
    return
  root = _root()
  position = {str(p): i for i, p in enumerate(files.paths)}
  meta = {"kept": [position[p] for p in split.paths], "errors": errors, "size": image_size}
  try:
    root.mkdir(parents=True, exist_ok=True)
    if (root / name).exists():
      return
    temporary = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    np.save(temporary / "images.npy", np.ascontiguousarray(split.images))
    (temporary / "meta.json").write_text(json.dumps(meta))
    try:
      os.rename(temporary, root / name)  # whole or not at all; another run may have won
    except OSError:
      shutil.rmtree(temporary, ignore_errors=True)
    evict(root)
  except OSError:
    return


def evict(root: Path, max_bytes: int = MAX_BYTES) -> None:
  """Removes the least recently used entries until the rest fit in max_bytes, and temporary
  folders an interrupted run left (older than an hour)."""
  entries, now = [], time.time()
  for entry in root.iterdir():
    if not entry.name.startswith("."):
      entries.append(entry)
      continue
    try:
      if now - entry.stat().st_mtime > 3600:
        shutil.rmtree(entry, ignore_errors=True)
    except OSError:
      pass
  evict_least_recent(entries, max_bytes)
