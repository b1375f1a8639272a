"""Label-directory datasets: `ROOT/<split>/<class>/<image>`, the layout Kaggle datasets ship in.

Finding the files of any layout (nested roots, archives, .npz, tfds) lives in `layout.py`; this
module decodes them. A file is named by a path or by a reference string `archive.zip::member`
(see `archive.py`).

Images are decoded once with Pillow, turned upright (EXIF orientation), converted to RGB, resized
and held in memory as uint8 (small medical datasets fit; decoding is the slow part, so it runs
on a thread pool: Pillow releases the GIL while decoding and resizing). Every path that turns a
file into pixels (training, streaming, evaluation, predict, the doctor) goes through
`upright_rgb`, so they all see the same picture.
"""

import concurrent.futures
import hashlib
import io
import logging
import os
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps

from jaxmed.data import archive, decoded_cache, layout
# FileList and Split live in files.py, below discovery and decoding alike; they are imported
# here too because callers know them as folder.FileList and folder.Split.
from jaxmed.data.files import STANDARD_SPLITS, FileList, Split

# Decompression-bomb guard: far above any medical image, far below what would exhaust memory.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000
# open_image refuses anything above the limit per file, so Pillow's warning would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

log = logging.getLogger(__name__)


def scan(root: str | os.PathLike) -> tuple[list[str], dict[str, FileList]]:
  """Finds splits and classes under `root`; returns (class names, {split: FileList}).

  Any layout `layout.discover` accepts (label folders at any depth, archives, .npz). The class
  list is the sorted union over splits, so a class missing from one split keeps its index.
  """
  found = layout.discover(root)
  layout.require_train(found, root)
  return found.classes, {s: found.splits[s] for s in STANDARD_SPLITS if s in found.splits}


def read_source(ref) -> bytes | np.ndarray:
  """The stored content of a file reference: bytes, or an array for `.npz` members."""
  return archive.read_array(ref) if archive.is_array_ref(ref) else archive.read_bytes(ref)


def content_sha256(data: bytes | np.ndarray) -> str:
  if isinstance(data, np.ndarray):
    data = np.ascontiguousarray(data).tobytes()
  return hashlib.sha256(data).hexdigest()


_PILLOW_PLUGINS = threading.Lock()
_pillow_plugins_imported = False


def import_pillow_plugins():
  """Pillow imports its format plugins at the first open. Decoding threads doing that side by side
  can deadlock on Python's import locks (see training/program_preload.py), so one thread imports
  them all, once per process (88 ms, measured on the 2-core CPU): the thread that starts a pool
  of decoders, or else the first decoder (streaming)."""
  global _pillow_plugins_imported
  with _PILLOW_PLUGINS:
    if not _pillow_plugins_imported:
      Image.init()
      _pillow_plugins_imported = True


def open_image(data: bytes | np.ndarray) -> Image.Image:
  """A lazily decoded Pillow image from file bytes or an image array; refuses decompression bombs
  (Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning is not per-file news)."""
  if isinstance(data, np.ndarray):
    return Image.fromarray(np.squeeze(data) if data.ndim == 3 and data.shape[-1] == 1 else data)
  if not data:
    raise ValueError("empty file (0 bytes)")
  if not _pillow_plugins_imported:
    import_pillow_plugins()
  try:
    im = Image.open(io.BytesIO(data))
  except Image.UnidentifiedImageError:
    raise ValueError(f"not a recognised image format (starts with {data[:8]!r})") from None
  if Image.MAX_IMAGE_PIXELS and im.size[0] * im.size[1] > Image.MAX_IMAGE_PIXELS:
    raise ValueError(f"{im.size[0]}x{im.size[1]} pixels exceeds the decompression-bomb guard "
                     f"({Image.MAX_IMAGE_PIXELS} pixels)")
  return im


DECODE_ERRORS = (OSError, ValueError, TypeError, Image.DecompressionBombError, SyntaxError,
                 EOFError, MemoryError)


def decode_image(path, image_size: int) -> np.ndarray:
  """Reads one file (path or `archive::member` reference) as (size, size, 3) uint8 RGB.
  Raises ValueError naming the file on bad input."""
  return _decode(path, image_size, with_hash=False)[0]


def _decode(path, image_size: int, with_hash: bool) -> tuple[np.ndarray, str | None]:
  try:
    data = read_source(path)
    digest = content_sha256(data) if with_hash else None
    with open_image(data) as im:
      im = upright_rgb(im, image_size)
      im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
      return np.asarray(im, dtype=np.uint8), digest
  except DECODE_ERRORS as e:
    raise ValueError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


EXIF_ORIENTATION = 0x0112


def orientation(im: Image.Image) -> int:
  """The EXIF Orientation tag (2-8: the camera's rotation/flip; 1: stored upright). 1 when the
  tag is absent or the EXIF block cannot be parsed: a damaged tag must not cost the image."""
  try:
    value = im.getexif().get(EXIF_ORIENTATION, 1)
  except Exception:  # Pillow's EXIF parser raises assorted types on malformed blocks
    return 1
  return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_rgb(im: Image.Image, draft: int | None = None) -> Image.Image:
  """The picture as it is meant to be seen, in RGB: a phone photo of a film carries its rotation
  in EXIF (Orientation) instead of in its pixels, and fed as stored it would be sideways.
  `draft`: decode a JPEG at reduced scale, no smaller than draft x draft, before anything else."""
  if draft:
    im.draft("RGB", (draft, draft))
  im.load()  # a damaged file fails here (PNG's getexif would load it inside orientation's guard)
  if orientation(im) != 1:
    im = ImageOps.exif_transpose(im)
  return to_rgb(im)


def to_rgb(im: Image.Image) -> Image.Image:
  if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    # 16-bit and float scans: stretch the full range to 8 bits instead of clipping at 255.
    a = np.asarray(im, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    im = Image.fromarray(a.round().astype(np.uint8), "L")
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    im = im.convert("RGBA")
    background = Image.new("RGBA", im.size, (0, 0, 0, 255))
    im = Image.alpha_composite(background, im)
  return im.convert("RGB")


def decode_files(files: FileList, image_size: int, workers: int | None = None,
                 with_hash: bool = False, cache: bool = False) -> tuple[Split, list[str]]:
  """Decodes a FileList in parallel. Bad files are skipped and returned as messages, never raised.
  `with_hash` also fills Split.sha256 from the same read (no second pass over the files).
  `cache`: reuse (and keep) the result of an earlier run on the same unchanged files
  (data/decoded_cache.py); never with `with_hash`, whose point is to read the content."""
  if cache and not with_hash:
    hit = decoded_cache.load(files, image_size)
    if hit is not None:
      return hit
    split, errors = decode_files(files, image_size, workers)
    decoded_cache.store(files, image_size, split, errors)
    return split, errors
  workers = workers or min(8, (os.cpu_count() or 1) + 2)
  images, labels, paths, digests, errors = [], [], [], [], []
  import_pillow_plugins()  # here, not in the pool's threads
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = [pool.submit(_decode, p, image_size, with_hash) for p in files.paths]
    for path, label, fut in zip(files.paths, files.labels, futures):
      try:
        image, digest = fut.result()
      except ValueError as e:
        errors.append(str(e))
        log.warning("skipping %s", e)
        continue
      images.append(image)
      digests.append(digest)
      labels.append(label)
      paths.append(str(path))
  shape = (0, image_size, image_size, 3)
  array = np.stack(images) if images else np.zeros(shape, np.uint8)
  return Split(array, np.asarray(labels, np.int32), paths, digests if with_hash else None), errors


def list_files(files: FileList, workers: int | None = None,
               with_hash: bool = False) -> tuple[Split, list[str]]:
  """The split without decoding it (images=None), for streaming. With `with_hash` every file is
  read (not decoded) for its sha256, and files that cannot be read are skipped as decode_files
  skips them; a file that reads but does not decode is only found when it is streamed."""
  labels = np.asarray(files.labels, np.int32)
  paths = [str(p) for p in files.paths]
  if not with_hash:
    return Split(None, labels, paths), []
  workers = workers or min(8, (os.cpu_count() or 1) + 2)
  keep, digests, errors = [], [], []
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for i, (path, (digest, error)) in enumerate(zip(paths, pool.map(_read_hash, paths))):
      if error:
        errors.append(f"{path}: cannot read file ({error})")
        log.warning("skipping %s", errors[-1])
      else:
        keep.append(i)
        digests.append(digest)
  return Split(None, labels[keep], [paths[i] for i in keep], digests), errors


def _read_hash(path) -> tuple[str | None, str | None]:
  """(content sha256, None), or (None, why the file could not be read)."""
  try:
    return content_sha256(read_source(path)), None
  except DECODE_ERRORS as e:
    return None, f"{type(e).__name__}: {e}"
