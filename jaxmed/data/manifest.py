"""Split manifests: the exact files, labels and splits of a run, written once and read by training.

Format: JSON Lines (UTF-8), chosen over CSV because it carries a header (the class order, which
sets label indices, and how the split was made) and any file or class name without quoting rules:

  {"jaxmed_manifest": 1, "classes": ["glioma", ...], "source": "...", "method": {...}}
  {"file": "Training/glioma/Tr-gl_0010.jpg", "label": "glioma", "split": "train", "sha256": "..."}
  ...

`file` is relative to the manifest's folder when the file lies below it (so a dataset folder and
its manifest move together), absolute otherwise; `a.zip::member` keeps the member, `tfds:` as is. `split` is train, val, test, or `excluded` (with a
`note`: unreadable, or a dropped duplicate), kept for the audit trail and never loaded. Row order
is load order, so a manifest of the default split loads exactly what `load_dataset` would.
"""

import json
import os
import re

import numpy as np

from jaxmed.data import archive, copies, folder, layout
from jaxmed.data import split as split_lib
from jaxmed.data.files import FileList

VERSION = 1
EXCLUDED = "excluded"


def _to_stored(ref: str, base: str) -> str:
  if ref.startswith("tfds:"):
    return ref
  parts = archive.split_ref(ref)
  path, member = parts if parts else (ref, None)
  path = os.path.abspath(path)  # a relative path is the caller's (its cwd's), not the manifest's
  try:
    rel = os.path.relpath(path, base)
    path = path if rel == ".." or rel.startswith(".." + os.sep) else rel  # relative only below
  except ValueError:  # another drive on Windows
    pass
  return path.replace(os.sep, "/") + (f"::{member}" if member is not None else "")


def _from_stored(stored: str, base: str) -> str:
  if stored.startswith("tfds:"):
    return stored
  parts = archive.split_ref(stored)
  path, member = parts if parts else (stored, None)
  path = os.path.normpath(os.path.join(base, path.replace("/", os.sep)))
  return path if member is None else archive.make_ref(path, member)


def write(path, classes: list[str], rows: list[dict], *, source: str, method: dict,
          force: bool = False):
  """Writes a manifest; refuses to replace an existing file unless `force`."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not force:
    raise FileExistsError(f"{path} exists; pass --force to overwrite it")
  base = os.path.dirname(path)
  os.makedirs(base, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    header = {"jaxmed_manifest": VERSION, "classes": classes, "source": source, "method": method}
    f.write(json.dumps(header, ensure_ascii=False) + "\n")
    for record in rows:
      record = dict(record, file=_to_stored(str(record["file"]), base))
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
  os.replace(tmp, path)  # never leave a half-written manifest under the real name


def read(path) -> tuple[list[str], dict[str, FileList], dict[str, list[str]], dict]:
  """Returns (classes, {split: FileList}, {split: [sha256]}, header); excluded rows are skipped."""
  path = os.path.abspath(os.path.expanduser(str(path)))
  base = os.path.dirname(path)
  with open(path, encoding="utf-8") as f:
    lines = [l for l in f if l.strip()]
  if not lines:
    raise ValueError(f"{path}: empty manifest")
  try:
    header = json.loads(lines[0])
    rows = [json.loads(l) for l in lines[1:]]
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not a jaxmed manifest (JSON Lines): {e}") from e
  if header.get("jaxmed_manifest") != VERSION:
    raise ValueError(f"{path}: first line is not a jaxmed manifest header (version {VERSION})")
  classes = list(header["classes"])
  index = {c: i for i, c in enumerate(classes)}
  lists, digests = {}, {}
  for n, row in enumerate(rows, start=2):
    if row.get("split") == EXCLUDED:
      continue
    if row.get("label") not in index:
      raise ValueError(f"{path}:{n}: label {row.get('label')!r} is not among the header classes")
    fl = lists.setdefault(row["split"], FileList([], []))
    fl.paths.append(_from_stored(row["file"], base))
    fl.labels.append(index[row["label"]])
    digests.setdefault(row["split"], []).append(row.get("sha256"))
  return classes, lists, digests, header


def check_readable(lists: dict[str, FileList], workers=None):
  """Decodes every file once (as training will, so the same files drop out) and hashes it.
  Returns ({split: Split with sha256}, [(path, label, split, error)])."""
  decoded, bad = {}, []
  for s, fl in lists.items():
    decoded[s], errors = folder.decode_files(fl, 16, workers, with_hash=True)
    ok = set(decoded[s].paths)
    bad += [(str(p), l, s, e) for (p, l), e in
            zip([(p, l) for p, l in zip(fl.paths, fl.labels) if str(p) not in ok], errors)]
  return decoded, bad


def row(classes, path, label, split, sha, note=None) -> dict:
  """One manifest row (used by the split and cross-validation writers)."""
  record = {"file": str(path), "label": classes[int(label)], "split": split, "sha256": sha}
  return dict(record, note=note) if note else record


def default_rows(classes, lists, *, seed: int, val_fraction: float, group_regex=None,
                 group_by=None, root: str = "", workers=None) -> list[dict]:
  """The dataset's own splits; validation carved from train exactly as `load_dataset` does
  (after unreadable files drop out), or group-aware when `group_regex` or `group_by='copies'`
  is given."""
  lists = {s: lists[s] for s in ("train", "val", "test") if s in lists}
  decoded, bad = check_readable(lists, workers)
  rows = []
  train = decoded["train"]
  if "val" in decoded:
    parts = {"train": train, "val": decoded["val"]}
  else:
    if group_regex or group_by:
      groups = _groups(train.paths, group_regex, group_by, root, workers)
      assign = split_lib.group_split(train.labels, groups, {"val": val_fraction}, seed)
      keep, held = np.flatnonzero(assign == "train"), np.flatnonzero(assign == "val")
    else:
      keep, held = split_lib.stratified_split(train.labels, val_fraction, seed)
    parts = {"train": train.subset(keep), "val": train.subset(held)}
  if "test" in decoded:
    parts["test"] = decoded["test"]
  for s, sp in parts.items():
    rows += [row(classes, p, l, s, h) for p, l, h in zip(sp.paths, sp.labels, sp.sha256)]
  rows += [row(classes, p, l, EXCLUDED, None, f"unreadable in {s}: {e}") for p, l, s, e in bad]
  return rows


def remix_rows(classes, lists, ratios: tuple[float, ...], *, seed: int, group_regex=None,
               group_by=None, root: str = "", workers=None) -> list[dict]:
  """Merges every split, drops exact duplicates (all copies when their labels disagree) and
  re-splits stratified at `ratios` (train, val[, test]), optionally keeping groups whole."""
  decoded, bad = check_readable(lists, workers)
  paths, labels, digests = [], [], []
  for sp in decoded.values():
    paths += sp.paths
    labels += sp.labels.tolist()
    digests += sp.sha256
  labels = np.asarray(labels, np.int32)
  excluded, first = [], {}
  keep = np.ones(len(paths), bool)
  for i, d in enumerate(digests):
    first.setdefault(d, []).append(i)
  for d, idx in first.items():
    if len(idx) < 2:
      continue
    if len(set(labels[idx].tolist())) > 1:
      keep[idx] = False
      names = sorted({classes[l] for l in labels[idx]})
      excluded += [(i, f"identical images labelled {', '.join(names)}") for i in idx]
    else:
      keep[idx[1:]] = False
      excluded += [(i, f"duplicate of {paths[idx[0]]}") for i in idx[1:]]
  kept = np.flatnonzero(keep)
  names = ["train", "val", "test"][:len(ratios)]
  if group_regex or group_by:
    groups = _groups([paths[i] for i in kept], group_regex, group_by, root, workers)
    assign = split_lib.group_split(labels[kept], groups, dict(zip(names[1:], ratios[1:])), seed)
  else:
    assign = split_lib.ratio_split(labels[kept], ratios, seed)
  rows = []
  for s in names:
    rows += [row(classes, paths[i], labels[i], s, digests[i]) for i in kept[assign == s]]
  rows += [row(classes, paths[i], labels[i], EXCLUDED, digests[i], note)
           for i, note in sorted(excluded)]
  rows += [row(classes, p, l, EXCLUDED, None, f"unreadable in {s}: {e}") for p, l, s, e in bad]
  return rows


def make_rows(path: str, *, seed: int, val_fraction: float, remix=None, group_regex=None,
              group_by=None, workers=None) -> tuple[list[str], list[dict], layout.Discovery]:
  """Discovers `path` and returns (classes, manifest rows, what was found): the dataset's own
  splits (`default_rows`), or every split merged and re-split at `remix` (`remix_rows`)."""
  found = layout.discover(path)
  if not remix:  # a remix merges every split, so a tree without train can still be re-split
    layout.require_train(found, path)
  root = found.root if found.kind == "folder" else ""
  if remix:
    rows = remix_rows(found.classes, found.splits, remix, seed=seed, group_regex=group_regex,
                      group_by=group_by, root=root, workers=workers)
  else:
    rows = default_rows(found.classes, found.splits, seed=seed, val_fraction=val_fraction,
                        group_regex=group_regex, group_by=group_by, root=root, workers=workers)
  return found.classes, rows, found


def relative_name(ref: str, root: str) -> str:
  """The part of a reference a group regex sees: the path below the dataset root."""
  parts = archive.split_ref(ref)
  if parts:
    return parts[1]
  try:
    return os.path.relpath(ref, root) if root and not ref.startswith("tfds:") else ref
  except ValueError:
    return ref


def group_keys(paths, regex: str, root: str = "") -> list[str]:
  """Group id per file: the regex's first capture group (or whole match); unmatched files are
  their own group, so they can land anywhere without splitting a real group."""
  pattern = re.compile(regex)
  keys = []
  for p in paths:
    m = pattern.search(relative_name(str(p), root))
    keys.append(("g:" + (m.group(1) if m.groups() else m.group(0))) if m else "f:" + str(p))
  return keys


def _groups(paths, group_regex, group_by, root, workers) -> list[str]:
  """Group keys by regex, by copy cluster, or by both (files sharing either share a group)."""
  regex_keys = group_keys(paths, group_regex, root) if group_regex else None
  if group_by != "copies":
    return regex_keys
  copy_keys, _ = copies.copy_keys([str(p) for p in paths], workers)
  if regex_keys is None:
    return copy_keys
  return [f"u:{i}" for i in copies.union_of(regex_keys, copy_keys)]
