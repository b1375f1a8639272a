"""Per-file fingerprints for the doctor and for manifests: content sha256, a perceptual hash,
decodability, size/mode/channel statistics and small thumbnails (the shift classifier's, and the
one copy clusters are found on), all from one read of each file.

The perceptual hash is the classic 64-bit DCT pHash: 32x32 grayscale, 2-D DCT-II, the 8x8
lowest frequencies compared with their median. It ignores re-encoding, resizing and mild
brightness changes, so a copy of a test image saved as JPEG at another size lands within a few
bits of the original.
"""

import collections
import concurrent.futures
import dataclasses
import os

import numpy as np
from PIL import Image

from jaxmed.data import folder

THUMB = 8  # thumbnail side for the train/test shift classifier
COPY_SIDE = 64  # grayscale thumbnail side copy clusters are found on (data/copies.py)


def _dct_matrix(n: int) -> np.ndarray:
  k = np.arange(n)[:, None]
  m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
  m[0] /= np.sqrt(2.0)
  return m


_DCT32 = _dct_matrix(32)


def phash(gray32: np.ndarray) -> int:
  """64-bit pHash of a 32x32 grayscale array."""
  coeffs = (_DCT32 @ gray32.astype(np.float64) @ _DCT32.T)[:8, :8].ravel()
  bits = coeffs > np.median(coeffs[1:])  # median without DC, which only tracks brightness
  return int(np.packbits(bits).view(">u8")[0])


def gray_thumbnail(im: Image.Image) -> np.ndarray:
  """The (COPY_SIDE, COPY_SIDE) uint8 grayscale thumbnail copy clusters compare, from an upright
  image; squashed to a square, so a copy resized to another aspect ratio still lines up."""
  return np.asarray(im.convert("L").resize((COPY_SIDE, COPY_SIDE), Image.Resampling.BOX), np.uint8)


@dataclasses.dataclass
class Probe:
  """Everything the doctor needs about one file; `error` set when it cannot be decoded."""
  ref: str
  sha256: str | None = None
  nbytes: int = 0
  error: str | None = None
  width: int = 0
  height: int = 0
  mode: str = ""
  channel_mean: tuple = ()
  channel_std: tuple = ()
  is_gray: bool = False
  orientation: int = 1  # EXIF Orientation; 2-8 were rotated/flipped upright when decoded
  phash: int = 0
  thumb: np.ndarray | None = None
  gray: np.ndarray | None = None  # COPY_SIDE^2 uint8, for copy clusters (data/copies.py)


def probe(ref) -> Probe:
  """Reads, hashes and fully decodes one file (reduced-scale JPEG decode still reads every byte,
  so truncation is caught). Never raises for bad content."""
  out = Probe(str(ref))
  try:
    data = folder.read_source(ref)
    out.sha256 = folder.content_sha256(data)
    out.nbytes = data.nbytes if isinstance(data, np.ndarray) else len(data)
    with folder.open_image(data) as im:
      out.width, out.height, out.mode = im.size[0], im.size[1], im.mode
      rgb = folder.upright_rgb(im, 64)
      out.orientation = folder.orientation(im)
      if out.orientation >= 5:  # a quarter turn: the size as the model sees it
        out.width, out.height = out.height, out.width
  except folder.DECODE_ERRORS as e:
    out.error = f"{type(e).__name__}: {e}"
    return out
  small = rgb.resize((64, 64), Image.Resampling.BILINEAR) if max(rgb.size) > 64 else rgb
  a = np.asarray(small, np.float32)
  out.channel_mean = tuple(round(float(v), 2) for v in a.mean(axis=(0, 1)))
  out.channel_std = tuple(round(float(v), 2) for v in a.std(axis=(0, 1)))
  out.is_gray = bool(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))
  gray = rgb.convert("L")
  out.gray = gray_thumbnail(gray)
  out.phash = phash(np.asarray(gray.resize((32, 32), Image.Resampling.BILINEAR)))
  out.thumb = np.asarray(gray.resize((THUMB, THUMB), Image.Resampling.BOX), np.float32).ravel() / 255
  return out


def probe_all(refs, workers: int | None = None) -> list[Probe]:
  """Probes files on a thread pool (hashlib and Pillow release the GIL), keeping input order."""
  workers = workers or min(16, 2 * (os.cpu_count() or 1) + 2)
  folder.import_pillow_plugins()  # here, not in the pool's threads
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(probe, refs))


def duplicate_groups(digests) -> list[list[int]]:
  """Indices sharing a sha256, groups of 2 or more, in first-occurrence order (None ignored)."""
  groups = collections.defaultdict(list)
  for i, d in enumerate(digests):
    if d is not None:
      groups[d].append(i)
  return [g for g in groups.values() if len(g) > 1]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Pairwise Hamming distances between two uint64 hash vectors, (len(a), len(b))."""
  return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int32)


def near_pairs(a: np.ndarray, b: np.ndarray, threshold: int, chunk: int = 2048) -> list[tuple[int, int, int]]:
  """(i, j, distance) with hamming(a[i], b[j]) <= threshold, chunked to bound memory."""
  out = []
  for start in range(0, len(a), chunk):
    d = hamming(a[start:start + chunk], b)
    for i, j in zip(*np.nonzero(d <= threshold)):
      out.append((start + int(i), int(j), int(d[i, j])))
  return out
