"""The end-to-end benchmark's data split (benchmarks/end_to_end.py): a seeded, class-stratified
train/val split of a label-folder dataset, written as a tree of symlinks that all three
frameworks read, and a digest of each split's files to check that they all read the same."""

import hashlib
import math
import os
import shutil
from pathlib import Path

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def list_class_files(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
  """Sorted class folder names and (file, label) pairs of the images below each of them."""
  classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
  files = []
  for label, name in enumerate(classes):
    for f in sorted((folder / name).iterdir()):
      if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
        files.append((f, label))
  return classes, files


def stratified_take(labels: list[int], count: int, rng) -> list[int]:
  """`count` indices drawn per class in proportion (largest remainder, >= 1 per class)."""
  import numpy as np
  labels = np.asarray(labels)
  classes = np.unique(labels)
  if count >= len(labels):
    return list(range(len(labels)))
  quota = {c: count * np.mean(labels == c) for c in classes}
  take = {c: max(1, int(math.floor(q))) for c, q in quota.items()}
  for c in sorted(classes, key=lambda c: quota[c] - math.floor(quota[c]), reverse=True):
    if sum(take.values()) >= count:
      break
    take[c] += 1
  out = []
  for c in classes:
    idx = np.flatnonzero(labels == c)
    out += rng.permutation(idx)[:min(take[c], len(idx))].tolist()
  return sorted(out)


def manifest_parts(manifest: Path) -> tuple[list[str], dict, int]:
  """Classes, {train, val: [(file, label)]} and the row count of a jaxmed manifest (e.g. a
  cross-validation fold's, W/manifests/fold-K.jsonl): its test and excluded rows are left out."""
  import json
  lines = manifest.read_text().splitlines()
  classes = json.loads(lines[0])["classes"]
  rows = [json.loads(line) for line in lines[1:] if line.strip()]
  parts = {s: [(Path(r["file"]), classes.index(r["label"])) for r in rows if r["split"] == s]
           for s in ("train", "val")}
  return classes, parts, len(rows)


def build_split(data: Path, out: Path, val_fraction: float, seed: int, subset: int | None,
                val_subset: int | None, manifest: Path | None = None) -> dict:
  """Writes out/{train,val}/<class>/ symlinks; returns classes, counts and a digest per split.
  With `manifest`, its train and val rows are the split (`data` is not listed)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  if manifest is not None:
    classes, parts, num_files = manifest_parts(manifest)
  else:
    classes, files = list_class_files(data)
    if len(classes) < 2:
      raise SystemExit(f"error: {data}: expected at least 2 class folders, found {classes}")
    labels = [l for _, l in files]
    val_idx = []
    for c in range(len(classes)):  # per class round(n * fraction), as jaxmed.data.split does
      idx = [i for i, l in enumerate(labels) if l == c]
      n = min(max(int(round(len(idx) * val_fraction)), 1), len(idx) - 1)
      val_idx += rng.permutation(idx)[:n].tolist()
    val_set = set(val_idx)
    parts = {"train": [files[i] for i in range(len(files)) if i not in val_set],
             "val": [files[i] for i in sorted(val_set)]}
    num_files = len(files)
  for name, count in (("train", subset), ("val", val_subset)):
    if count:
      keep = stratified_take([l for _, l in parts[name]], count, rng)
      parts[name] = [parts[name][i] for i in keep]
  if out.exists():
    shutil.rmtree(out)
  info = {"source": str(manifest or data), "classes": classes, "counts": {}, "sha256": {}}
  for name, items in parts.items():
    for c in classes:
      (out / name / c).mkdir(parents=True)
    for f, label in items:
      os.symlink(f.resolve(), out / name / classes[label] / f.name)
    info["counts"][name] = {c: sum(1 for _, l in items if l == i) for i, c in enumerate(classes)}
    info["sha256"][name] = files_digest(f"{classes[l]}/{f.name}" for f, l in items)
  info["num_source_files"] = num_files
  return info


def files_digest(relative_paths) -> str:
  """sha256 over the sorted '<class>/<file name>' strings of one split."""
  return hashlib.sha256("\n".join(sorted(relative_paths)).encode()).hexdigest()[:16]


def jaxmed_view(tree: Path) -> dict:
  """The tree as jaxmed.train will see it (the same discovery call); imports neither JAX nor TF."""
  from jaxmed.data import discover
  listing = discover.list_dataset(str(tree))
  out = {"classes": listing.classes, "splits": sorted(listing.lists), "counts": {}, "sha256": {}}
  for name, fl in listing.lists.items():
    rel = [f"{listing.classes[l]}/{Path(p).name}" for p, l in zip(fl.paths, fl.labels)]
    out["counts"][name] = {c: fl.labels.count(i) for i, c in enumerate(listing.classes)}
    out["sha256"][name] = files_digest(rel)
  return out
