"""The dataset doctor's analysis: what is in a dataset, what is wrong with it, what to do about it.

`examine(spec)` returns one JSON-ready report: counts per split and class, imbalance, unreadable
files, image sizes/modes/channels, files rotated by their EXIF tag (turned upright when loaded),
exact duplicates (sha256) within and across splits with label conflicts, near duplicates across
splits (pHash), copy clusters (augmented copies: rotated, flipped, shifted, re-encoded; see
data/copies.py for how they are found and how well), classes missing from a split, a
train/test shift score and plain advice; `format_report` renders it as text. The command line
is `python -m jaxmed.doctor` (jaxmed/doctor.py).
"""

import collections
import time

import numpy as np

from jaxmed.data import copies, hashing, layout
from jaxmed.data import split as split_lib
from jaxmed.evaluation import metrics

SMALL_CLASS = 100   # fewer training images than this: say transfer learning and class weights
SMALL_VAL = 5       # fewer validation images per class than this: recall is noise
COPY_FRACTION = 0.05  # this share of train images with a copy in train: say validation is optimistic
SHIFT_AUC = 0.75    # a linear model on thumbnails separating train from test this well = shift


def examine(spec: str, *, near_threshold: int = 4, val_fraction: float = 0.15, workers=None,
            find_copies: bool = True) -> dict:
  start = time.perf_counter()
  found = layout.discover(spec)
  classes = found.classes
  refs, splits_of, labels_of = [], [], []
  for s, fl in found.splits.items():
    refs += [str(p) for p in fl.paths]
    splits_of += [s] * len(fl.paths)
    labels_of += list(fl.labels)
  probes = hashing.probe_all(refs, workers)
  splits_of, labels_of = np.asarray(splits_of, object), np.asarray(labels_of)
  ok = np.array([p.error is None for p in probes], bool)
  report = {"root": found.root, "layout": found.layout, "classes": classes,
            "extra_splits": found.extra_splits}
  report["splits"] = {s: {c: int(np.sum(ok & (splits_of == s) & (labels_of == k)))
                          for k, c in enumerate(classes)} for s in found.splits}
  report["imbalance"] = {s: _imbalance(counts) for s, counts in report["splits"].items()}
  report["unreadable"] = [p.ref for p in probes if p.error]
  report["unreadable_details"] = [f"{p.ref}: {p.error}" for p in probes if p.error]
  report["images"] = {s: _image_stats([p for p, si in zip(probes, splits_of) if si == s and p.error is None])
                      for s in found.splits}
  oriented = [p.ref for p in probes if p.error is None and p.orientation != 1]
  report["exif_orientation"] = {"rotated_or_flipped": len(oriented), "files": oriented}
  report["duplicates"] = _duplicates(probes, splits_of, labels_of, classes, near_threshold)
  report["copies"] = _copies(probes, splits_of, labels_of, classes) if find_copies else None
  report["missing_classes"] = {s: [c for c, n in counts.items() if n == 0]
                               for s, counts in report["splits"].items()
                               if any(n == 0 for n in counts.values())}
  other = "test" if "test" in found.splits else "val" if "val" in found.splits else None
  report["shift"] = None
  if other and "train" in found.splits:
    a = [p for p, s in zip(probes, splits_of) if s == "train" and p.error is None]
    b = [p for p, s in zip(probes, splits_of) if s == other and p.error is None]
    auc = shift_auc(a, b)
    report["shift"] = {"between": ["train", other], "auc": auc, "n": [len(a), len(b)]}
  report["ignored"] = [path for path, _ in found.ignored]
  report["ignored_details"] = found.ignored_messages()
  report["warnings"] = found.warnings()
  report["advice"] = advice(report, found, labels_of[ok & (splits_of == "train")], val_fraction)
  report["seconds"] = round(time.perf_counter() - start, 2)
  return report


def _imbalance(counts: dict) -> float | None:
  present = [n for n in counts.values() if n > 0]
  return round(max(present) / min(present), 2) if present else None


def _image_stats(probes) -> dict:
  if not probes:
    return {}
  w = np.array([p.width for p in probes])
  h = np.array([p.height for p in probes])
  means = np.array([p.channel_mean for p in probes])
  stds = np.array([p.channel_std for p in probes])
  return {"width": [int(w.min()), int(np.median(w)), int(w.max())],
          "height": [int(h.min()), int(np.median(h)), int(h.max())],
          "distinct_sizes": len(set(zip(w.tolist(), h.tolist()))),
          "modes": dict(collections.Counter(p.mode for p in probes).most_common()),
          "grayscale_fraction": round(float(np.mean([p.is_gray for p in probes])), 3),
          "channel_mean": np.round(means.mean(0), 1).tolist(),
          "channel_std": np.round(stds.mean(0), 1).tolist()}


def _duplicates(probes, splits_of, labels_of, classes, threshold) -> dict:
  groups = hashing.duplicate_groups([p.sha256 if p.error is None else None for p in probes])
  within = collections.Counter()
  cross, conflicts = [], []
  extra_copies = 0
  for g in groups:
    split_names = sorted(set(splits_of[g]))
    group_labels = sorted({classes[l] for l in labels_of[g]})
    entry = {"sha256": probes[g[0]].sha256, "files": [probes[i].ref for i in g],
             "splits": [str(splits_of[i]) for i in g], "labels": [classes[labels_of[i]] for i in g]}
    for s in split_names:
      n = int(np.sum(splits_of[g] == s))
      if n > 1:
        within[s] += 1
        extra_copies += n - 1
    if len(split_names) > 1:
      cross.append(entry)
    if len(group_labels) > 1:
      conflicts.append(entry)
  near = []
  names = list(dict.fromkeys(splits_of.tolist()))
  good = np.array([p.error is None for p in probes])
  hashes = np.array([p.phash for p in probes], np.uint64)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      ia = np.flatnonzero(good & (splits_of == a))
      ib = np.flatnonzero(good & (splits_of == b))
      for x, y, d in hashing.near_pairs(hashes[ia], hashes[ib], threshold):
        pa, pb = probes[ia[x]], probes[ib[y]]
        if pa.sha256 != pb.sha256:  # exact copies are reported above
          near.append({"files": [pa.ref, pb.ref], "splits": [a, b], "distance": d})
  return {"within_split": sum(within.values()), "within_split_by_split": dict(within),
          "within_split_extra_copies": extra_copies, "cross_split": cross,
          "label_conflicts": conflicts, "near_cross_split": near, "near_threshold": threshold}


def _copies(probes, splits_of, labels_of, classes, examples: int = 5) -> dict:
  """Copy clusters over every readable image (data/copies.py), and what they mean for splits."""
  ok, found = copies.among_probes(probes)
  clusters = [ok[c] for c in found.clusters()]
  cluster_splits = [set(splits_of[c].tolist()) for c in clusters]
  with_copy_in_train = {}
  for s in dict.fromkeys(splits_of.tolist()):
    if s != "train":
      with_copy_in_train[s] = int(sum(np.sum(splits_of[c] == s) for c, names in
                                      zip(clusters, cluster_splits) if "train" in names))
  train_in_train_clusters = sum(int(np.sum(splits_of[c] == "train")) for c in clusters
                                if np.sum(splits_of[c] == "train") > 1)
  n_train = int(np.sum(splits_of[ok] == "train"))
  return {"clusters": len(clusters), "images_in_clusters": int(sum(len(c) for c in clusters)),
          "largest": max((len(c) for c in clusters), default=0),
          "with_copy_in_train": with_copy_in_train,
          "train_images_with_copy_in_train": train_in_train_clusters,
          "train_fraction_with_copy": round(train_in_train_clusters / n_train, 4) if n_train else 0.0,
          "mixed_labels": sum(len({int(l) for l in labels_of[c]}) > 1 for c in clusters),
          "examples": [{"files": [probes[i].ref for i in c[:6]], "size": len(c),
                        "splits": [str(splits_of[i]) for i in c[:6]],
                        "labels": [classes[labels_of[i]] for i in c[:6]]} for c in clusters[:examples]],
          "thresholds": {"min_psr": copies.MIN_PSR, "min_aligned": copies.MIN_ALIGNED,
                         "min_region": copies.MIN_REGION},
          "stats": found.stats}


def _features(probes) -> np.ndarray:
  stats = [[np.log(p.width), np.log(p.height), np.log1p(p.nbytes), float(p.is_gray),
            *p.channel_mean, *p.channel_std] for p in probes]
  return np.hstack([np.stack([p.thumb for p in probes]), np.asarray(stats, np.float64)])


def shift_auc(a, b, folds: int = 5, seed: int = 0, max_per_side: int = 2000) -> float | None:
  """Cross-validated AUC of a ridge logistic regression telling probes `a` from `b` (0.5: no
  shift). Uses 8x8 thumbnails plus size, file size, grayscale flag and channel statistics."""
  rng = np.random.default_rng(seed)
  a = [a[i] for i in rng.permutation(len(a))[:max_per_side]]
  b = [b[i] for i in rng.permutation(len(b))[:max_per_side]]
  if min(len(a), len(b)) < folds * 2:
    return None
  x = _features(a + b)
  y = np.r_[np.zeros(len(a)), np.ones(len(b))]
  fold = np.r_[rng.permutation(len(a)) % folds, rng.permutation(len(b)) % folds]  # stratified
  scores = np.zeros(len(y))
  for k in range(folds):
    tr, te = fold != k, fold == k
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    w = _fit_logistic((x[tr] - mu) / sd, y[tr])
    scores[te] = np.c_[np.ones(te.sum()), (x[te] - mu) / sd] @ w
  return round(metrics.binary_auc(scores, y), 3)


def _fit_logistic(x, y, l2: float = 1.0, steps: int = 15) -> np.ndarray:
  """Newton's method (IRLS) with an L2 penalty on the weights; a few steps converge."""
  x = np.c_[np.ones(len(x)), x]
  w = np.zeros(x.shape[1])
  penalty = l2 * np.eye(x.shape[1])
  penalty[0, 0] = 0.0
  for _ in range(steps):
    p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
    grad = x.T @ (p - y) + penalty @ w
    hess = (x * (p * (1 - p))[:, None]).T @ x + penalty
    w -= np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
  return w


def advice(report, found, train_labels, val_fraction) -> list[str]:
  out = []
  classes, splits, dup = report["classes"], report["splits"], report["duplicates"]
  if len(classes) < 2:
    out.append(f"only one class ({', '.join(classes)}): training needs at least 2 class folders")
  if "train" not in splits:
    out.append(f"no train split (only {', '.join(splits)}): fine for `python -m jaxmed.evaluate "
               f"--data`, but training needs ROOT/train/<class>/<image>")
  if found.empty_classes:
    out.append(f"{len(found.empty_classes)} empty class folder(s), e.g. {found.empty_classes[0]}: "
               f"not a class until it holds images; fill or remove it")
  if report["unreadable"]:
    out.append(f"{len(report['unreadable'])} files cannot be decoded and will be skipped, e.g. "
               f"{report['unreadable_details'][0]}")
  for s in [s for s in splits if s != "train"]:
    n = sum(g["splits"].count(s) for g in dup["cross_split"] if "train" in g["splits"])
    if n:
      out.append(f"{n} {s} images also occur in train: evaluation is inflated; "
                 f"use --config.data.dedupe=cross_split")
  found = report.get("copies")
  if found:
    for s, n in found["with_copy_in_train"].items():
      if n:
        out.append(f"{n} {s} images have an augmented copy in train (rotated, flipped, shifted or "
                   f"re-encoded): {s} results are optimistic; re-split keeping copies together with "
                   f"`python -m jaxmed.split PATH --out split.jsonl --remix 0.8,0.1,0.1 --group-by copies`")
    if "val" not in splits and found["train_fraction_with_copy"] >= COPY_FRACTION:
      out.append(f"{found['train_fraction_with_copy']:.0%} of training images have an augmented copy "
                 f"in train ({found['clusters']} copy clusters, the largest {found['largest']}): a "
                 f"validation split carved at random from train will hold copies of training images "
                 f"and flatter the model; train with --config.data.group_by=copies, which keeps "
                 f"each cluster on one side")
  if dup["label_conflicts"]:
    g = dup["label_conflicts"][0]
    out.append(f"{len(dup['label_conflicts'])} groups of identical images carry different labels "
               f"(e.g. {g['files'][0]} is {' and '.join(sorted(set(g['labels'])))}): fix or remove them")
  if dup["within_split"]:
    out.append(f"{dup['within_split']} groups of identical images inside a split "
               f"({dup['within_split_extra_copies']} redundant copies): they over-weight those "
               f"images and can straddle a validation split carved from train; "
               f"`python -m jaxmed.split PATH --out split.jsonl --remix 0.8,0.1,0.1` drops them")
  if dup["near_cross_split"]:
    out.append(f"{len(dup['near_cross_split'])} near-duplicate pairs across splits (re-encoded or "
               f"resized copies): evaluation may be inflated; inspect them, or re-split with "
               f"`python -m jaxmed.split --remix ... --group-regex` by patient")
  for s, missing in report["missing_classes"].items():
    for c in missing:
      out.append(f"class {c} has no images in {s}: its recall cannot be measured there"
                 if s != "train" else f"class {c} has no training images: the model cannot learn it")
  train = splits.get("train", {})
  for c, n in train.items():
    if 0 < n < SMALL_CLASS:
      out.append(f"class {c} has {n} images: use transfer learning and class weights")
  ratio = report["imbalance"].get("train")
  if ratio and ratio >= 3:
    out.append(f"classes are imbalanced (largest/smallest = {ratio:g} in train): use class weights "
               f"and judge by macro-F1 or balanced accuracy, not accuracy")
  if "val" in splits:
    for c, n in splits["val"].items():
      if 0 < n < SMALL_VAL:
        out.append(f"validation split has only {n} images of class {c}: its recall is noisy")
  elif len(train_labels):
    _, held = split_lib.stratified_split(train_labels, val_fraction, 0)
    held_counts = np.bincount(train_labels[held], minlength=len(classes))
    for k, c in enumerate(classes):
      if train.get(c, 0) and held_counts[k] < SMALL_VAL:
        out.append(f"validation split would leave {held_counts[k]} images of class {c} "
                   f"(val_fraction {val_fraction:g})")
  shift = report["shift"]
  if shift and shift["auc"] is not None and shift["auc"] >= SHIFT_AUC:
    out.append(f"a simple classifier tells {shift['between'][0]} from {shift['between'][1]} images "
               f"apart (AUC {shift['auc']:.2f}): they differ systematically (scanner, size, "
               f"preprocessing); test accuracy may not reflect the training distribution")
  sizes = [st for st in report["images"].values() if st]
  if sizes and len({m for st in sizes for m in st["modes"]}) > 1:
    modes = sorted({m for st in sizes for m in st["modes"]})
    out.append(f"images mix modes {', '.join(modes)}: all are converted to RGB when loaded")
  return out


def format_report(r: dict) -> str:
  classes = r["classes"]
  width = max([5] + [len(c) for c in classes])
  lines = [f"dataset: {r['root']}", f"layout:  {r['layout']}", ""]
  head = f"{'split':12s}" + "".join(f"{c:>{width + 2}s}" for c in classes) + f"{'total':>8s}{'imbalance':>11s}"
  lines += [head, "-" * len(head)]
  for s, counts in r["splits"].items():
    ratio = r["imbalance"][s]
    lines.append(f"{s:12s}" + "".join(f"{counts[c]:>{width + 2}d}" for c in classes)
                 + f"{sum(counts.values()):>8d}{(f'{ratio:.2f}' if ratio else '-'):>11s}")
  lines.append("")
  for s, st in r["images"].items():
    if st:
      lines.append(f"{s}: size {st['width'][0]}-{st['width'][2]} x {st['height'][0]}-{st['height'][2]} "
                   f"(median {st['width'][1]}x{st['height'][1]}, {st['distinct_sizes']} distinct), modes "
                   + ", ".join(f"{m} {n}" for m, n in st["modes"].items())
                   + f", grayscale {st['grayscale_fraction']:.0%}, channel mean {st['channel_mean']}")
  d = r["duplicates"]
  lines += [f"unreadable files: {len(r['unreadable'])}"] + [f"  {x}" for x in r["unreadable_details"][:10]]
  lines.append(f"EXIF orientation: {r['exif_orientation']['rotated_or_flipped']} files rotated or "
               f"flipped by their EXIF tag (turned upright when loaded; nothing to fix)")
  lines.append(f"exact duplicates: {d['within_split']} groups within splits "
               f"({d['within_split_extra_copies']} extra copies), {len(d['cross_split'])} groups "
               f"across splits, {len(d['label_conflicts'])} with conflicting labels")
  lines.append(f"near duplicates across splits (pHash distance <= {d['near_threshold']}): "
               f"{len(d['near_cross_split'])} pairs")
  lines += [f"  {p['files'][0]}  ~  {p['files'][1]}  ({p['distance']})" for p in d["near_cross_split"][:5]]
  c = r.get("copies")
  if c:
    where = ", ".join(f"{n} {s}" for s, n in c["with_copy_in_train"].items())
    lines.append(f"copy clusters (rotations/flips, shifts, zoom, re-encoding, brightness): "
                 f"{c['clusters']} clusters, {c['images_in_clusters']} images, largest "
                 f"{c['largest']}; {c['train_fraction_with_copy']:.1%} of train images have a copy "
                 f"in train" + (f"; with a copy in train: {where}" if where else ""))
    lines += [f"  {e['size']} images: " + ", ".join(e["files"][:3]) + (" ..." if e["size"] > 3 else "")
              for e in c["examples"][:3]]
  if r["shift"]:
    auc = r["shift"]["auc"]
    lines.append(f"shift {r['shift']['between'][0]} vs {r['shift']['between'][1]}: "
                 + (f"AUC {auc:.2f} (0.5 = indistinguishable)" if auc is not None else "too few images"))
  lines.append(f"ignored: {len(r['ignored'])} items" + "".join(f"\n  {x}" for x in r["ignored_details"][:10])
               + ("\n  ..." if len(r["ignored"]) > 10 else ""))
  lines += ["", "advice:"] + ([f"  - {a}" for a in r["advice"]] or ["  - nothing to fix"])
  lines.append(f"\n({r['seconds']:.1f} s)")
  return "\n".join(lines)
