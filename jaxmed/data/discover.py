"""Loading a dataset: `load_dataset` is the trainer's single entry point (discovery or a manifest
-> decoded splits); `list_dataset` lists the files without decoding them.

What layouts are accepted and how they are found is `layout.py`; decoding is `folder.py`.
"""

import dataclasses
import os

import numpy as np

from jaxmed.data import copies, folder
from jaxmed.data import manifest as manifest_lib
from jaxmed.data import split as split_lib
# Imported here too because callers know them as discover.discover, discover.walk, ...
from jaxmed.data.files import STANDARD_SPLITS, FileList, is_clutter, is_image_name
from jaxmed.data.layout import Discovery, discover, require_train, walk

__all__ = ["Discovery", "FileList", "Listing", "STANDARD_SPLITS", "discover", "is_clutter",
           "is_image_name", "list_dataset", "load_dataset", "walk"]


@dataclasses.dataclass
class Listing:
  """A dataset's files before decoding: classes, the standard splits' FileLists, the manifest's
  sha256 per split (empty without one) and what discovery found (None with a manifest)."""
  spec: str
  classes: list[str]
  lists: dict[str, FileList]
  expected: dict[str, list[str]]
  found: Discovery | None
  manifest: str | None

  @property
  def num_files(self) -> int:
    return sum(len(f.paths) for f in self.lists.values())


def list_dataset(spec: str, manifest: str | None = None) -> Listing:
  """Discovers `spec` (or reads the manifest) without decoding anything."""
  found, expected = None, {}
  if manifest:
    classes, lists, expected, _ = manifest_lib.read(manifest)
    lists = {s: lists[s] for s in STANDARD_SPLITS if s in lists}
    if "train" not in lists:
      raise ValueError(f"{manifest}: no rows with split 'train'")
    # A manifest replays an exact file set: a file gone since it was written is an error, not a skip.
    gone = [p for fl in lists.values() for p in fl.paths
            if "::" not in str(p) and not os.path.exists(p)]  # archive members are checked on read
    if gone:
      raise ValueError(f"{manifest}: {len(gone)} listed file(s) no longer exist, e.g. {gone[0]}; "
                       f"restore them, or write a new manifest with python -m jaxmed.split")
  else:
    found = discover(spec)
    require_train(found, spec)
    classes = found.classes
    lists = {s: found.splits[s] for s in STANDARD_SPLITS if s in found.splits}
  if len(classes) < 2:
    raise ValueError(f"{spec}: found only one class ({', '.join(classes) or 'none'}); a classifier "
                     f"needs at least 2 class folders, e.g. ROOT/train/<class>/<image>")
  return Listing(spec, classes, lists, expected, found, manifest)


def load_dataset(spec: str, image_size: int, *, seed: int, val_fraction: float,
                 manifest: str | None = None, dedupe: str | None = None, workers=None,
                 listing: Listing | None = None, decode: bool = True, group_by: str | None = None,
                 decoded_cache: bool = False):
  """The trainer's entry point: (classes, {'train', 'val'[, 'test']: Split}, record).

  Without a manifest, validation (when the data has none) is carved from train exactly as
  before: `stratified_split(train labels, val_fraction, seed)` after unreadable files drop out.
  With one, its files, labels, splits and order are used as written (sha256 checked).
  `dedupe='cross_split'` drops val/test images whose content also occurs in train.
  `group_by='copies'` carves that validation split by copy cluster (data/copies.py), so no
  augmented copy of a training image is validated on. `listing` reuses a `list_dataset` result.
  `decode=False` leaves the images undecoded (Split.images is None; the streaming input path):
  files are then only read when hashes are needed, so a file that reads but does not decode
  stays in its split until it is streamed. `decoded_cache` reuses an earlier run's decoded images
  of unchanged files (data/decoded_cache.py).
  """
  if dedupe is not None and str(dedupe).lower() in ("", "none"):  # 'None' from the command line
    dedupe = None
  if dedupe not in (None, "cross_split"):
    raise ValueError(f"dedupe must be None or 'cross_split', got {dedupe!r}")
  listing = listing or list_dataset(spec, manifest)
  classes, lists, expected, found = listing.classes, listing.lists, listing.expected, listing.found
  manifest = listing.manifest
  hashed = bool(manifest) or dedupe == "cross_split"
  splits, skipped, mismatched = {}, [], []
  for name, files in lists.items():
    if decode:
      splits[name], errors = folder.decode_files(files, image_size, workers, with_hash=hashed,
                                                 cache=decoded_cache)
    else:
      splits[name], errors = folder.list_files(files, workers, with_hash=hashed)
    skipped += errors
    if name in expected:  # the manifest's digests, by path, for the files that decoded
      want = dict(zip(map(str, files.paths), expected[name]))
      mismatched += [p for p, h in zip(splits[name].paths, splits[name].sha256)
                     if want.get(p) and want[p] != h]
  if mismatched:  # the same names, other content: not the split the manifest pinned
    raise ValueError(f"{manifest}: {len(mismatched)} file(s) changed since the manifest was "
                     f"written (sha256 differs), e.g. {mismatched[0]}; restore them, or write a "
                     f"new manifest with python -m jaxmed.split")
  carved = None
  if "val" not in splits:  # carve a stratified validation split from train, as Keras' subset=
    keep, held, carved = _carve_validation(splits["train"], val_fraction, seed, group_by, workers)
    splits["val"] = splits["train"].subset(held)
    splits["train"] = splits["train"].subset(keep)
  dropped = {}
  if dedupe == "cross_split":
    seen = set(splits["train"].sha256)
    for name in [s for s in splits if s != "train"]:
      dup = np.array([h in seen for h in splits[name].sha256], bool)
      if dup.any():
        dropped[name] = [p for p, d in zip(splits[name].paths, dup) if d]
        splits[name] = splits[name].subset(np.flatnonzero(~dup))
  record = {
      "root": str(found.root if found else spec), "source": found.kind if found else "manifest",
      "layout": found.layout if found else "", "manifest": os.path.abspath(manifest) if manifest else None,
      "counts": {s: np.bincount(v.labels, minlength=len(classes)).tolist() for s, v in splits.items()},
      "skipped_files": skipped,
      "ignored": found.ignored_messages() if found else [],
      # One console line per kind that changes what is trained (empty class folders, refused
      # archive members); the details stay in "ignored".
      "warnings": found.warnings() if found else [],
      "extra_splits": {s: len(found.splits[s].paths) for s in found.extra_splits} if found else {},
      "dedupe": {"mode": dedupe or None, "dropped": dropped,
                 "num_dropped": sum(len(v) for v in dropped.values())},
      "validation": carved or {"method": "manifest" if manifest else "dataset's own val split"},
  }
  if len(splits["train"]) == 0:
    raise ValueError(f"{spec}: no readable training images ({len(skipped)} files could not be decoded)")
  return classes, splits, record


GROUP_BY = (None, "copies")


def _carve_validation(train, val_fraction: float, seed: int, group_by, workers):
  """(keep, held, how): stratified at random, or keeping each copy cluster on one side."""
  if group_by is not None and str(group_by).lower() in ("", "none"):
    group_by = None
  if group_by not in GROUP_BY:
    raise ValueError(f"data.group_by must be None or 'copies', got {group_by!r}")
  if group_by is None:
    keep, held = split_lib.stratified_split(train.labels, val_fraction, seed)
    return keep, held, {"method": "random", "val_fraction": val_fraction, "seed": seed}
  keys, found = copies.copy_keys(  # reads every training file once more
      [str(p) for p in train.paths], workers)
  assign = split_lib.group_split(train.labels, keys, {"val": val_fraction}, seed)
  clusters = found.clusters()
  how = {"method": "copies", "val_fraction": val_fraction, "seed": seed,
         "clusters": len(clusters), "images_in_clusters": sum(len(c) for c in clusters),
         "largest": max((len(c) for c in clusters), default=0), "stats": found.stats}
  return np.flatnonzero(assign == "train"), np.flatnonzero(assign == "val"), how
