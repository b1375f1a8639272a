"""Reading datasets inside `.zip` / `.tar(.gz)` archives and MedMNIST `.npz` files in place.

A file inside a container is named by a reference string `CONTAINER::MEMBER`, e.g.
`/data/cells.zip::images/TRAIN/EOSINOPHIL/1.jpg` or `/data/breastmnist.npz::train_images[12]`,
so one string flows from discovery through manifests to decoding. TensorFlow Datasets records
are named `tfds:NAME:SPLIT[INDEX]` and read through `tfds.data_source` (no TensorFlow needed). Nothing is ever extracted:
members with absolute paths, `..` parts or links, and oversized members (zip bombs), are refused
and listed, never opened.
"""

import functools
import os
import re
import tarfile
import threading
import zipfile
import zlib

import numpy as np

from jaxmed.runtime import import_lock

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
CONTAINER_SUFFIXES = ARCHIVE_SUFFIXES + (".npz",)
_REF = re.compile(r"^(.*?(?:" + "|".join(re.escape(s) for s in CONTAINER_SUFFIXES) + r"))::(.+)$",
                  re.IGNORECASE | re.DOTALL)
_NPZ_MEMBER = re.compile(r"^(\w+)\[(\d+)\]$")
_lock = threading.Lock()


def is_archive(path) -> bool:
  return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def split_ref(ref) -> tuple[str, str] | None:
  """'/a.zip::x/y.jpg' -> ('/a.zip', 'x/y.jpg'); None for a plain file path."""
  m = _REF.match(str(ref))
  return (m.group(1), m.group(2)) if m else None


def make_ref(container, member: str) -> str:
  return f"{container}::{member}"


def unsafe_reason(name: str) -> str | None:
  """Why an archive member name must not be used (it could point outside the archive's tree)."""
  norm = name.replace("\\", "/")
  if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
    return "absolute path"
  if ".." in norm.split("/"):
    return "'..' in path"
  if "\0" in norm:
    return "NUL in name"
  return None


# A member bigger than this is refused unread: far above any image the decoder accepts
# (folder.py's pixel guard), and reading it whole could exhaust memory (a zip bomb).
MAX_MEMBER_BYTES = 2 << 30
MAX_RATIO = 1000  # above MAX_RATIO_FROM bytes, a zip member compressed this well is a bomb
MAX_RATIO_FROM = 100 << 20


def size_reason(size: int, packed: int | None = None) -> str | None:
  """Why a member of `size` bytes (`packed` compressed, when known) must not be read."""
  if size > MAX_MEMBER_BYTES:
    return f"{size} bytes uncompressed (over {MAX_MEMBER_BYTES}; a zip bomb?)"
  if packed is not None and size > MAX_RATIO_FROM and size > MAX_RATIO * max(packed, 1):
    return f"compression ratio {size // max(packed, 1)}:1 (a zip bomb?)"
  return None


def list_members(path) -> tuple[list[str], list[tuple[str, str]]]:
  """Returns (regular-file member names that are safe to read, refused (reference, reason))."""
  members, _, refused = list_tree(path)
  return members, refused


def list_tree(path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
  """(safe regular-file members, safe folder members, refused (reference, 'refused: why'))."""
  members, dirs, refused = [], [], []
  for name, kind, size, packed in _entries(str(path)):
    reason = unsafe_reason(name) or (None if kind in ("file", "dir") else f"{kind} member")
    reason = reason or (size_reason(size, packed) if kind == "file" else None)
    if reason:
      refused.append((make_ref(path, name), f"refused: {reason}"))
    else:
      (dirs if kind == "dir" else members).append(name)
  return members, dirs, refused


def refused_warning(container, refused: list[tuple[str, str]], limit: int = 5) -> str | None:
  """One console line for the members of `container` that were refused, or None."""
  if not refused:
    return None
  items = [f"{(split_ref(ref) or (ref, ref))[1]} ({why.removeprefix('refused: ')})"
           for ref, why in refused[:limit]]
  more = f", ... ({len(refused)} in all)" if len(refused) > limit else ""
  return f"warning: refused {len(refused)} archive member(s) of {container}: {', '.join(items)}{more}"


def _entries(path: str):
  """(name, kind, uncompressed size, compressed size or None) for every member."""
  if path.lower().endswith(".zip"):
    with zipfile.ZipFile(path) as zf:
      for info in zf.infolist():
        # Unix mode bits in external_attr mark symlinks stored by `zip -y`.
        is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
        kind = "dir" if info.is_dir() else ("link" if is_link else "file")
        yield info.filename, kind, info.file_size, info.compress_size
  else:
    with tarfile.open(path) as tf:
      for info in tf:
        kind = ("dir" if info.isdir() else "file" if info.isfile() else
                "link" if info.issym() or info.islnk() else "special")
        yield info.name, kind, info.size, None


def read_bytes(ref) -> bytes:
  """The bytes of a plain file or an archive member. Raises OSError/ValueError on bad input."""
  parts = split_ref(ref)
  if parts is None:
    with open(ref, "rb") as f:
      return f.read()
  container, member = parts
  if container.lower().endswith(".npz"):
    raise ValueError(f"{ref}: an array, not a file (use read_array)")
  reason = unsafe_reason(member)
  if reason:
    raise ValueError(f"{ref}: refused archive member ({reason})")
  try:
    if container.lower().endswith(".zip"):
      zf = _open_zip(container, *_stamp(container))
      info = zf.getinfo(member)
      reason = size_reason(info.file_size, info.compress_size)
      if reason:
        raise ValueError(f"{ref}: refused archive member ({reason})")
      return zf.read(info)  # ZipFile serialises reads of its shared handle internally
    data = _tar_contents(container, *_stamp(container)).get(member)
  except (KeyError, zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as e:
    raise ValueError(f"{ref}: cannot read archive member ({type(e).__name__}: {e})") from e
  if data is None:
    raise FileNotFoundError(f"{ref}: no such regular file in the archive")
  return data


def read_array(ref) -> np.ndarray:
  """One image of a `.npz` reference 'x.npz::train_images[12]' or a tfds one 'tfds:x:train[3]'."""
  ref = str(ref)
  if ref.startswith("tfds:"):
    name, _, rest = ref[5:].partition(":")
    split, _, index = rest.rpartition("[")
    try:
      return np.asarray(tfds_record(name, split)[int(index.rstrip("]"))]["image"])
    except (KeyError, IndexError, TypeError) as e:
      raise ValueError(f"{ref}: no such record/image ({type(e).__name__}: {e})") from e
  container, member = split_ref(ref)
  m = _NPZ_MEMBER.match(member)
  if not m:
    raise ValueError(f"{ref}: expected NAME[INDEX] after '::'")
  try:
    return load_npz(container, *_stamp(container))[m.group(1)][int(m.group(2))]
  except (KeyError, IndexError) as e:
    raise ValueError(f"{ref}: no such array element ({type(e).__name__}: {e})") from e


def is_array_ref(ref) -> bool:
  if str(ref).startswith("tfds:"):
    return True
  parts = split_ref(ref)
  return parts is not None and parts[0].lower().endswith(".npz")


def _stamp(path: str) -> tuple[float, int]:
  st = os.stat(path)
  return st.st_mtime, st.st_size  # part of the cache keys: a replaced archive is re-read


@functools.lru_cache(maxsize=4)
def _open_zip(path: str, mtime: float, size: int) -> zipfile.ZipFile:
  return zipfile.ZipFile(path)


@functools.lru_cache(maxsize=2)
def _tar_contents(path: str, mtime: float, size: int) -> dict[str, bytes]:
  # A compressed tar has no random access: one sequential pass reads every regular file
  # (small datasets; the decoded arrays are held in memory anyway).
  with _lock, tarfile.open(path) as tf:
    out = {}
    for info in tf:
      if info.isfile() and not unsafe_reason(info.name) and not size_reason(info.size):
        out[info.name] = tf.extractfile(info).read()
    return out


@functools.lru_cache(maxsize=2)
def load_npz(path: str, mtime: float = 0.0, size: int = 0) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def tensorflow_datasets(spec: str):
  """The tensorflow_datasets module, an optional dependency (`pip install "jaxmed[tfds]"`)."""
  try:
    with import_lock.IMPORTS:  # its import opens etils' process-wide lazy-import window
      import tensorflow_datasets as tfds
  except ImportError as e:
    raise ValueError(f"{spec} needs TensorFlow Datasets, which is not installed: "
                     f'pip install "jaxmed[tfds]" (or pass a folder, archive or .npz)') from e
  return tfds


@functools.lru_cache(maxsize=8)
def tfds_record(name: str, split: str):
  """A random-access tfds data source (already prepared on disk: never downloads)."""
  tfds = tensorflow_datasets(f"tfds:{name}")
  try:
    return tfds.data_source(name, split=split, download=False)
  except Exception as e:  # tfds raises assorted types for "not prepared"; say what to do
    # data_source reads ArrayRecord files; `tfds build`'s default format, TFRecord, it cannot.
    raise ValueError(f"tfds:{name}:{split}: cannot open ({type(e).__name__}: {e}); prepare it "
                     f"first with `tfds build {name} --file_format=array_record` (jaxmed never "
                     f"downloads)") from e

