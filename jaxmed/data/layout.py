"""Finding a labelled image dataset in what people actually download.

Accepted: label folders at any depth (`x/images/TRAIN/<class>/...` beside unrelated folders),
split folders matched case-insensitively (train/training, val/valid/validation, test/testing),
other folders with the same classes as extra splits (`TEST_SIMPLE`), split folders without a
train split (an external test set: evaluation reads it, training refuses it in one line), a
root of class folders only (one unsplit pool, used as train), `.zip`/`.tar(.gz)` archives read
in place, MedMNIST `.npz` and `tfds:NAME[:SPLIT]`. Clutter (dotfiles, `__MACOSX`, CSV, notebooks, folders without
images) is ignored and listed, so the user sees what was left out.

Only finds files; decoding is `folder.py`, and `discover.load_dataset` puts the two together.
"""

import collections
import dataclasses
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from jaxmed.data import archive
from jaxmed.data.files import STANDARD_SPLITS, FileList, is_clutter, is_image_name, split_name

_TFDS_SPLITS = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}


@dataclasses.dataclass
class Discovery:
  """What was found: classes, {split: FileList} (standard splits first, then extras), and
  everything left out as (path, reason)."""
  root: str
  kind: str  # 'folder', 'archive', 'npz' or 'tfds'
  classes: list[str]
  splits: dict[str, FileList]
  extra_splits: list[str] = dataclasses.field(default_factory=list)
  ignored: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  layout: str = ""  # human description, e.g. "split folders in images/"
  # Of `ignored`, what a user must hear about on the console (the rest is clutter):
  empty_classes: list[str] = dataclasses.field(default_factory=list)  # 'train/ghost', below root
  refused: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # archive members

  def ignored_messages(self) -> list[str]:
    return [f"{path} ({reason})" for path, reason in self.ignored]

  def warnings(self, limit: int = 5) -> list[str]:
    """One console line per kind of thing left out that changes what is trained or evaluated:
    empty class folders (a class the user meant to have) and refused archive members."""
    out = []
    if self.empty_classes:
      more = f", ... ({len(self.empty_classes)} in all)" if len(self.empty_classes) > limit else ""
      out.append(f"warning: skipped empty class folder(s): "
                 f"{', '.join(self.empty_classes[:limit])}{more}")
    refused = archive.refused_warning(self.root, self.refused, limit)
    return out + ([refused] if refused else [])


def require_train(found: Discovery, spec) -> None:
  """Training needs a train split; a tree of test-like splits is only for evaluating."""
  if "train" not in found.splits:
    raise ValueError(
        f"{spec} has splits {', '.join(found.splits)} but no train split: training needs "
        f"ROOT/train/<class>/<image> (train/ or training/); to evaluate a trained run on it, "
        f"use python -m jaxmed.evaluate --workdir W --data {spec}")


def discover(spec: str | os.PathLike) -> Discovery:
  """Dispatches on the spec: `tfds:...`, an `.npz`, an archive, or a folder."""
  spec = str(spec)
  if spec.startswith("tfds:"):
    return discover_tfds(spec)
  path = os.path.abspath(os.path.expanduser(spec))
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: dataset folder not found")
  if path.lower().endswith(".npz"):
    return discover_npz(path)
  if archive.is_archive(path) and os.path.isfile(path):
    return _discover_archive(path)
  if not os.path.isdir(path):
    raise ValueError(f"{path}: not a folder, archive (.zip, .tar, .tar.gz), .npz or tfds:NAME")
  files, dirs, ignored = walk(path)
  return _discover_tree(path, [(f, _parts(f)) for f in files], [_parts(d) for d in dirs], ignored,
                        lambda f: Path(path, f), "folder")


def _discover_archive(path: str) -> Discovery:
  try:
    members, dirs, refused = archive.list_tree(path)
  except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
    raise ValueError(f"{path}: cannot read the archive ({type(e).__name__}: {e})") from e
  # Folders implied by members' paths too: few archivers store folder entries.
  folders = ({p[:i] for p in map(_parts, members) for i in range(len(p))}
             | {p[:i] for p in map(_parts, dirs) for i in range(len(p) + 1)})
  folders = [f for f in folders if not any(is_clutter(x) for x in f)]
  found = _discover_tree(path, [(m, _parts(m)) for m in members], sorted(folders), list(refused),
                         lambda m: archive.make_ref(path, m), "archive")
  found.refused = refused
  return found


def _parts(name: str) -> tuple[str, ...]:
  return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def walk(root: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
  """Relative '/'-joined paths of the files and folders below `root`, following directory
  symlinks once: a symlink loop (or a second link to a visited folder) is listed, not followed."""
  files, dirs, ignored, visited = [], [], [], set()
  stack = [""]
  while stack:
    rel = stack.pop()
    here = os.path.join(root, rel)
    try:
      st = os.stat(here)
      entries = sorted(os.scandir(here), key=lambda e: e.name)
    except OSError as e:
      ignored.append((here, f"unreadable folder: {e.strerror or e}"))
      continue
    if (st.st_dev, st.st_ino) in visited:
      ignored.append((here, "symlink to a folder already scanned (loop?); not followed"))
      continue
    visited.add((st.st_dev, st.st_ino))
    dirs.append(rel)
    subdirs = []
    for e in entries:
      sub = f"{rel}/{e.name}" if rel else e.name
      if is_clutter(e.name):
        ignored.append((e.path, "clutter"))
        continue
      try:
        mode = os.stat(e.path).st_mode
      except OSError:
        ignored.append((e.path, "broken link or unreadable"))
        continue
      if stat.S_ISDIR(mode):
        subdirs.append(sub)
      elif stat.S_ISREG(mode):
        files.append(sub)
      else:
        ignored.append((e.path, "not a regular file"))
    stack.extend(reversed(subdirs))
  return files, dirs, ignored


def _discover_tree(root: str, entries, dirs, ignored, to_ref, kind: str) -> Discovery:
  """Finds the labelled part of a file tree given as (name, parts) pairs; `dirs` are its folders
  as parts tuples (for reporting folders without images)."""
  images = {}
  for name, parts in entries:
    if not parts or any(is_clutter(p) for p in parts):
      ignored.append((str(to_ref(name)), "clutter"))
    elif is_image_name(parts[-1]):
      images[parts] = name
    else:
      ignored.append((str(to_ref(name)), f"not an image ({os.path.splitext(parts[-1])[1] or 'no extension'})"))
  tree = _Tree(images)
  base, split_dirs, layout = _find_split_container(tree)
  if base is None:
    base = tree.descend_wrappers(())
    split_dirs = {"train": base}
    layout = f"class folders in {'/'.join(base) or '.'} (no split folders: one pool, used as train)"
  per_split = {s: tree.classes_of(d) for s, d in split_dirs.items()}
  classes = sorted(set().union(*(per_split[s] for s in STANDARD_SPLITS if s in per_split)))
  if not classes or any(split_name(c) for c in classes):
    raise ValueError(
        f"{root}: no labelled images found; expected ROOT/train/<class>/<image> (train/ or "
        f"training/, optionally test/ and val/), or ROOT/<class>/<image>")
  # An extra split (e.g. TEST_SIMPLE) must be labelled with the same classes.
  extras = [s for s in per_split if s not in STANDARD_SPLITS and set(per_split[s]) <= set(classes)]
  split_dirs = {s: d for s, d in split_dirs.items() if s in STANDARD_SPLITS or s in extras}
  index = {c: i for i, c in enumerate(classes)}
  used, lists = set(), {}
  for s in split_dirs:
    paths, labels = [], []
    for name in sorted(per_split[s]):
      for parts in per_split[s][name]:
        paths.append(to_ref(images[parts]))
        labels.append(index[name])
        used.add(parts)
    lists[s] = FileList(paths, labels)
  empty = _report_imageless(tree, dirs, set(split_dirs.values()), ignored, to_ref)
  ignored += _summarize_unused(tree, used, split_dirs, images, to_ref, root)
  return Discovery(root, kind, classes, lists, extras, ignored, layout, empty_classes=empty)


def _report_imageless(tree, dirs, split_dirs, ignored, to_ref) -> list[str]:
  """Lists the topmost folders without images; returns those that sit where a class folder
  would (in a split folder, or the pool): empty class folders, the ones a user must hear of."""
  empty = []
  for d in sorted(dirs):
    if d and d not in tree.count and d[:-1] in tree.count:
      is_class = d[:-1] in split_dirs
      ignored.append((str(to_ref("/".join(d))) + "/",
                      "empty class folder: no images" if is_class else "folder with no images"))
      if is_class:
        empty.append("/".join(d))
  return empty


class _Tree:
  """Folder structure implied by image paths: which folders hold images below them."""

  def __init__(self, images):
    self.children = collections.defaultdict(set)
    self.count = collections.Counter()
    self.direct = collections.defaultdict(list)
    for parts in images:
      self.direct[parts[:-1]].append(parts)
      for i in range(len(parts)):
        self.count[parts[:i]] += 1
        if i < len(parts) - 1:
          self.children[parts[:i]].add(parts[i])

  def subdirs(self, d) -> list[tuple[str, ...]]:
    return [d + (c,) for c in sorted(self.children.get(d, ()))]

  def classes_of(self, split_dir) -> dict[str, list[tuple[str, ...]]]:
    """Class name -> image parts below each subfolder, sorted (as `sorted(Path.rglob)` would)."""
    return {d[-1]: sorted(self.images_below(d)) for d in self.subdirs(split_dir)}

  def images_below(self, d):
    stack = [d]
    while stack:
      x = stack.pop()
      yield from self.direct.get(x, ())
      stack.extend(self.subdirs(x))

  def descend_wrappers(self, d):
    # `download/dataset-name/<class>/...`: skip folders that only wrap one folder of classes.
    while not self.direct.get(d) and len(self.children.get(d, ())) == 1:
      (child,) = self.subdirs(d)
      if not self.subdirs(child):
        break
      d = child
    return d


def _find_split_container(tree: _Tree):
  """The shallowest folder (then the one with most images) holding a train-like split folder;
  failing that, one holding any split folder (`images/TEST`, an external test set)."""
  candidates = {"train": [], "any": []}
  for d in list(tree.count):
    if d and split_name(d[-1]) and tree.subdirs(d):
      parent = d[:-1]
      key = (len(parent), -tree.count[parent], parent)
      candidates["train" if split_name(d[-1]) == "train" else "any"].append(key)
  if not (candidates["train"] or candidates["any"]):
    return None, {}, ""
  parent = min(candidates["train"] or candidates["any"])[2]
  standard, extra = {}, {}
  for d in tree.subdirs(parent):
    s = split_name(d[-1])
    if s and s not in standard:
      standard[s] = d
    elif tree.subdirs(d):  # candidate extra split; kept only if its classes match
      extra.setdefault(d[-1].lower(), d)
  layout = f"split folders in {'/'.join(parent) or '.'}"
  layout += "" if "train" in standard else " (no train split)"
  return parent, {s: standard[s] for s in STANDARD_SPLITS if s in standard} | extra, layout


def _summarize_unused(tree, used, split_dirs, images, to_ref, root):
  """Images outside the chosen tree, one line per folder (a download may hold hundreds)."""
  by_folder = collections.defaultdict(list)
  for parts in images:
    if parts not in used:
      by_folder[parts[:-1]].append(parts)
  out = []
  for folder_parts, files in sorted(by_folder.items()):
    in_split = any(folder_parts == d for d in split_dirs.values())
    reason = "image outside a class folder" if in_split else "images outside the labelled folders"
    if len(files) == 1:
      out.append((str(to_ref(images[files[0]])), reason))
    else:
      out.append((str(to_ref("/".join(folder_parts))) + "/", f"{len(files)} {reason.replace('image ', 'images ')}"))
  return out


def discover_npz(path: str) -> Discovery:
  """MedMNIST layout: {train,val,test}_images (N, H, W[, C]) and _labels (N,) or (N, 1)."""
  arrays = archive.load_npz(path, *archive._stamp(path))
  lists, num_classes = {}, 0
  for s in STANDARD_SPLITS:
    if f"{s}_images" not in arrays:
      continue
    labels = np.asarray(arrays.get(f"{s}_labels"))
    if labels.ndim == 2 and labels.shape[1] == 1:
      labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != len(arrays[f"{s}_images"]):
      raise ValueError(f"{path}: {s}_labels has shape {labels.shape}; expected (N,) or (N, 1) "
                       f"single-label classes matching {s}_images (multi-label is not supported)")
    refs = [archive.make_ref(path, f"{s}_images[{i}]") for i in range(len(labels))]
    lists[s] = FileList(refs, labels.astype(int).tolist())
    num_classes = max(num_classes, int(labels.max()) + 1 if len(labels) else 0)
  if "train" not in lists:
    raise ValueError(f"{path}: no train_images/train_labels arrays (keys: {sorted(arrays)})")
  unused = [(f"{path}::{k}", "array not used") for k in arrays
            if not any(k == f"{s}_{t}" for s in lists for t in ("images", "labels"))]
  classes = [str(i) for i in range(num_classes)]  # .npz stores no names; index = label
  return Discovery(path, "npz", classes, lists, [], unused, "MedMNIST .npz arrays")


def discover_tfds(spec: str) -> Discovery:
  """`tfds:NAME` (all prepared splits) or `tfds:NAME:SPLIT` (that split, used as train)."""
  name, _, split = spec[5:].partition(":")
  if split:
    wanted = {"train": split}
  else:
    tfds = archive.tensorflow_datasets(spec)
    try:
      info = tfds.builder(name).info
      names = list(info.splits.keys())
    except Exception as e:
      raise ValueError(f"{spec}: cannot read dataset info ({type(e).__name__}: {e})") from e
    wanted = {_TFDS_SPLITS[n]: n for n in names if n in _TFDS_SPLITS}
  lists, label_names = {}, None
  for s, tfds_split in wanted.items():
    source = archive.tfds_record(name, tfds_split)
    labels = [int(source[i]["label"]) for i in range(len(source))]
    refs = [f"tfds:{name}:{tfds_split}[{i}]" for i in range(len(source))]
    lists[s] = FileList(refs, labels)
    try:
      label_names = list(source.dataset_info.features["label"].names)
    except (AttributeError, KeyError, TypeError):
      pass
  if "train" not in lists:
    raise ValueError(f"{spec}: no train split among {list(wanted.values())}")
  num_classes = 1 + max(max(l.labels, default=0) for l in lists.values())
  classes = label_names or [str(i) for i in range(num_classes)]
  return Discovery(spec, "tfds", classes, lists, [], [], "TensorFlow Datasets data source")

