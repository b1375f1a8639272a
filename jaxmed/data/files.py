"""What a dataset is made of, shared by every jaxmed.data module: which file names are images,
which folder names are splits or clutter, a split's files before decoding (FileList) and after
(Split).

This module imports no other jaxmed.data module, so discovery, decoding and manifests can all
build on it without importing each other in a circle.
"""

import dataclasses
import os
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
STANDARD_SPLITS = ("train", "val", "test")
# Folder names users' archives use for each split, matched case-insensitively.
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
CLUTTER_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini", "__pycache__"})


def is_clutter(name: str) -> bool:
  return name.startswith(".") or name.lower() in CLUTTER_NAMES


def is_image_name(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def split_name(folder: str) -> str | None:
  """'train', 'val' or 'test' for a folder named as one of SPLIT_ALIASES (any case), else None."""
  for split, aliases in SPLIT_ALIASES.items():
    if folder.lower() in aliases:
      return split
  return None


@dataclasses.dataclass
class FileList:
  """A split before decoding: the files (paths or archive reference strings), class indices."""
  paths: list[Path | str]
  labels: list[int]


@dataclasses.dataclass
class Split:
  """One split held in memory: images (N, H, W, 3) uint8, labels (N,) int32, source paths,
  and (when decoded with hashing) each file's content sha256. `images` is None for a split that
  is streamed (decoded batch by batch while training, jaxmed/data/stream.py)."""
  images: np.ndarray | None
  labels: np.ndarray
  paths: list[str]
  sha256: list[str] | None = None

  def __len__(self):
    return len(self.labels)

  def subset(self, index: np.ndarray) -> "Split":
    sha = None if self.sha256 is None else [self.sha256[i] for i in index]
    images = None if self.images is None else self.images[index]
    return Split(images, self.labels[index], [self.paths[i] for i in index], sha)
