"""Label-directory datasets: `ROOT/<split>/<class>/<image>`, the layout Kaggle datasets ship in.

Images are decoded once with Pillow, converted to RGB, resized and held in memory as uint8
(small medical datasets fit; decoding is the slow part, so it runs on a thread pool: Pillow
releases the GIL while decoding and resizing).
"""

import concurrent.futures
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# Folder names users' archives use for each split, matched case-insensitively.
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
# Decompression-bomb guard: far above any medical image, far below what would exhaust memory.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Split:
  """One split held in memory: images (N, H, W, 3) uint8, labels (N,) int32, source paths."""
  images: np.ndarray
  labels: np.ndarray
  paths: list[str]

  def __len__(self):
    return len(self.labels)

  def subset(self, index: np.ndarray) -> "Split":
    return Split(self.images[index], self.labels[index], [self.paths[i] for i in index])


@dataclasses.dataclass
class FileList:
  """A split before decoding: the files and their class indices."""
  paths: list[Path]
  labels: list[int]


def find_split_dirs(root: Path) -> dict[str, Path]:
  """Maps 'train'/'val'/'test' to the matching subfolders of `root` (case-insensitive aliases)."""
  found = {}
  children = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir()}
  for split, aliases in SPLIT_ALIASES.items():
    for alias in aliases:
      if alias in children:
        found[split] = children[alias]
        break
  return found


def list_class_files(split_dir: Path) -> dict[str, list[Path]]:
  """Class name -> sorted image files below `split_dir/<class>/` (recursively; non-images skipped)."""
  classes = {}
  for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not _is_clutter(p.name)):
    files = sorted(
        p for p in class_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not _is_clutter(p.name))
    classes[class_dir.name] = files
  return classes


def _is_clutter(name: str) -> bool:
  return name.startswith(".") or name in ("__MACOSX",)


def scan(root: str | os.PathLike) -> tuple[list[str], dict[str, FileList]]:
  """Finds splits and classes under `root`; returns (class names, {split: FileList}).

  The class list is the sorted union over splits, so a class missing from one split keeps the
  same index everywhere.
  """
  root = Path(root).expanduser()
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: dataset folder not found")
  split_dirs = find_split_dirs(root)
  if not split_dirs:
    raise ValueError(
        f"{root}: no train/ (or training/) folder found; expected ROOT/train/<class>/<image> "
        f"and optionally ROOT/test/ and ROOT/val/")
  per_split = {split: list_class_files(d) for split, d in split_dirs.items()}
  classes = sorted(set().union(*(c.keys() for c in per_split.values())))
  if "train" not in per_split or not any(per_split["train"].values()):
    raise ValueError(f"{root}: the train split has no images")
  lists = {}
  for split, by_class in per_split.items():
    paths, labels = [], []
    for name, files in by_class.items():
      paths += files
      labels += [classes.index(name)] * len(files)
    lists[split] = FileList(paths, labels)
  return classes, lists


def decode_image(path: Path, image_size: int) -> np.ndarray:
  """Reads one file as (size, size, 3) uint8 RGB. Raises ValueError naming the file on bad input."""
  try:
    with Image.open(path) as im:
      im.draft("RGB", (image_size, image_size))  # JPEG: decode at reduced scale when possible
      im = _to_rgb(im)
      im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
      return np.asarray(im, dtype=np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
    raise ValueError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


def _to_rgb(im: Image.Image) -> Image.Image:
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


def decode_files(files: FileList, image_size: int, workers: int | None = None) -> tuple[Split, list[str]]:
  """Decodes a FileList in parallel. Bad files are skipped and returned as messages, never raised."""
  workers = workers or min(8, (os.cpu_count() or 1) + 2)
  images, labels, paths, errors = [], [], [], []
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = [pool.submit(decode_image, p, image_size) for p in files.paths]
    for path, label, fut in zip(files.paths, files.labels, futures):
      try:
        images.append(fut.result())
      except ValueError as e:
        errors.append(str(e))
        log.warning("skipping %s", e)
        continue
      labels.append(label)
      paths.append(str(path))
  shape = (0, image_size, image_size, 3)
  array = np.stack(images) if images else np.zeros(shape, np.uint8)
  return Split(array, np.asarray(labels, np.int32), paths), errors
