"""How well copy clusters (jaxmed/data/copies.py) find augmented copies, and how often they merge
distinct images, measured on the shared train images.

  python benchmarks/copy_detection.py [--json FILE] [--originals 200] [--copies 5] [--quick]

`--quick` (about 12 minutes on 2 cores): strength 1 only, no per-kind runs, no 5k/20k timing.

1. Built copies: `--originals` images of each shared train split get `--copies` augmented copies
   each (benchmarks/copy_maker.py: one of the 8 rotations/flips plus a random subset of shift,
   zoom, small rotation, brightness/contrast, resize, JPEG), per `strength` (1: shifts and zooms
   up to 4 %, rotations up to 4 degrees; 2.5: Keras' common 10 % / 10 % / 10 degrees), and one
   copy per kind alone. The whole split plus the copies is clustered; recall is the share of
   (original, copy) and (copy, copy) pairs in one cluster, precision the share of pairs in one
   cluster among the originals' images that come from one original.
2. Distinct images: the share of each real train split's images that land in a cluster, and for
   the chest X-rays (whose names carry a patient id) the share in a cluster spanning two patients;
   for both, the share in a cluster spanning two class folders and in a cluster whose weakest pair
   (complete link, `weakest_links`) does not align as a copy: the proxy for distinct images merged
   where no ids exist (brain MRI).
3. Time: find_copies on 5k and 20k thumbnails (the shared images plus rotated copies of them).
"""

import argparse
import glob
import json
import os
import platform
import re
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import copy_maker  # noqa: E402
from jaxmed.data import copies, folder, hashing  # noqa: E402

SHARED = os.environ.get("JAXMED_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
SETS = {"chest_xray": "data/chest_xray_pneumonia/train/*/*.jpeg",
        "brain_mri": "data/brain_tumor_mri/Training/*/*.jpg"}


def thumb(path) -> np.ndarray:
  with Image.open(path) as im:
    im.draft("RGB", (copies.SIDE, copies.SIDE))
    return hashing.gray_thumbnail(im)


def patient(path: str) -> str:
  m = re.search(r"(person\d+)_|IM-(\d+)-", os.path.basename(path))
  return (m.group(1) or m.group(2)) if m else path


def weakest_links(found, gray, digests, most=60) -> dict:
  """Each cluster's weakest pair (complete-link check), by its first member: (the lowest aligned
  correlation, the lowest worst-region correlation; copies.best_turn_scores) over its members'
  pairs, byte-identical pairs left out, the first `most` members of a larger cluster. A
  cluster with a pair under copies.MIN_ALIGNED or copies.MIN_REGION holds two images that do not
  match as copies (single linkage chained them through others, or a copy was edited
  non-linearly): an upper bound on distinct images merged where no ids exist (brain MRI), whose
  flagged clusters are then looked at by eye."""
  out = {}
  for c in found.clusters():
    pairs = [(a, b) for k, a in enumerate(c[:most]) for b in c[k + 1:most]
             if digests[a] != digests[b]]
    if not pairs:
      out[c[0]] = (1.0, 1.0)
      continue
    i, j = np.array(pairs).T
    whole, region = copies.best_turn_scores(gray[i].astype(np.float32), gray[j].astype(np.float32))
    out[c[0]] = (float(whole.min()), float(region.min()))
  return out


def pair_scores(cluster, origin) -> dict:
  same_cluster = cluster[:, None] == cluster[None]
  same_origin = origin[:, None] == origin[None]
  upper = np.triu_indices(len(origin), 1)
  sc, so = same_cluster[upper], same_origin[upper]
  tp, fp, fn = int(np.sum(sc & so)), int(np.sum(sc & ~so)), int(np.sum(~sc & so))
  return {"recall": round(tp / max(tp + fn, 1), 4), "precision": round(tp / max(tp + fp, 1), 4),
          "pairs": tp + fn}


def built_copies(paths, grays, rng, originals, per, strength, kinds=None) -> dict:
  picked = rng.choice(len(paths), originals, replace=False)
  extra, origin = [], []
  for j in picked:
    with Image.open(paths[j]) as im:
      im.load()
      for _ in range(per):
        extra.append(hashing.gray_thumbnail(copy_maker.augmented_copy(im, rng, kinds, strength)))
        origin.append(j)
  gray = np.concatenate([grays, np.stack(extra)])
  found = copies.find_copies(gray)
  members = np.r_[picked, len(paths) + np.arange(len(extra))]
  origin_all = np.r_[picked, origin]
  scores = pair_scores(found.cluster[members], origin_all)
  # an original's images clustered with anything from outside its own images
  outside = [bool(np.any((found.cluster == found.cluster[m]) & ~np.isin(np.arange(len(gray)),
                                                                        members[origin_all == o])))
             for m, o in zip(members, origin_all)]
  scores["merged_with_other_images"] = round(float(np.mean(outside)), 4)
  return scores


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", default=None)
  parser.add_argument("--originals", type=int, default=200)
  parser.add_argument("--copies", type=int, default=5)
  parser.add_argument("--quick", action="store_true", help="strength 1 only, no per-kind runs "
                      "and no 5k/20k timing")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  records = []
  machine = {"cpu": _cpu(), "python": platform.python_version(), "numpy": np.__version__,
             "date": time.strftime("%Y-%m-%d")}

  def record(dataset, metric, value, **extra):
    records.append({"dataset": dataset, "metric": metric, "value": value, **extra, **machine})
    print(json.dumps(records[-1]))

  pools = {}
  for name, pattern in SETS.items():
    paths = sorted(glob.glob(os.path.join(SHARED, pattern)))
    if not paths:
      print(f"skipping {name}: no files at {os.path.join(SHARED, pattern)}")
      continue
    grays = np.stack([thumb(p) for p in paths])
    pools[name] = (paths, grays)
    start = time.perf_counter()
    digests = [folder.content_sha256(open(p, "rb").read()) for p in paths]
    found = copies.find_copies(grays, digests)
    seconds = time.perf_counter() - start
    clusters = found.clusters()
    record(name, "images_in_clusters", round(sum(map(len, clusters)) / len(paths), 4),
           images=len(paths), clusters=len(clusters), largest=len(clusters[0]) if clusters else 0,
           seconds=round(seconds, 1))
    weakest = weakest_links(found, grays, digests)
    weak = [c for c in clusters if weakest[c[0]][0] < copies.MIN_ALIGNED]
    record(name, "images_in_clusters_with_a_pair_below_min_aligned",
           round(sum(map(len, weak)) / len(paths), 4), clusters=len(weak))
    weak = [c for c in clusters if weakest[c[0]][0] < copies.MIN_ALIGNED
            or weakest[c[0]][1] < copies.MIN_REGION]
    record(name, "images_in_clusters_with_a_pair_failing_the_pixel_check",
           round(sum(map(len, weak)) / len(paths), 4), clusters=len(weak),
           first_members=[os.path.relpath(paths[c[0]], SHARED) for c in weak])
    classes = [c for c in clusters if len({os.path.basename(os.path.dirname(paths[i]))
                                           for i in c}) > 1]
    record(name, "images_in_clusters_spanning_classes",
           round(sum(map(len, classes)) / len(paths), 4), clusters=len(classes))
    if name == "chest_xray":
      spanning = [c for c in clusters if len({patient(paths[i]) for i in c}) > 1]
      record(name, "images_in_clusters_spanning_patients",
             round(sum(map(len, spanning)) / len(paths), 4), clusters=len(spanning))
    for strength in (1.0,) if args.quick else (1.0, 2.5):
      record(name, "built_copies", built_copies(paths, grays, rng, args.originals, args.copies,
                                                 strength), strength=strength, copies=args.copies,
             originals=args.originals, kinds="dihedral + random subset")
    per_kind = name == "chest_xray" and not args.quick  # brain: see its merge rate
    for kind in copy_maker.KINDS[1:] if per_kind else ():
      record(name, "built_copies", built_copies(paths, grays, rng, args.originals // 2, 2, 1.0,
                                                 ["dihedral", kind]), strength=1.0, kinds=f"dihedral + {kind}")
  if len(pools) == 2 and not args.quick:
    both = np.concatenate([pools["chest_xray"][1], pools["brain_mri"][1]])
    augmented = np.stack([copies.dihedral(g, int(t)) for g, t in
                          zip(both[rng.integers(0, len(both), 20000 - len(both))],
                              rng.integers(1, 8, 20000 - len(both)))])
    every = np.concatenate([both, augmented])
    for n in (5000, 20000):
      start = time.perf_counter()
      found = copies.find_copies(every[:n])
      record("chest_xray+brain_mri(+rotated copies)", "find_copies_seconds",
             round(time.perf_counter() - start, 1), images=n, stages=found.stats)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(records, f, indent=1)
  return 0


def _cpu() -> str:
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
  except OSError:
    pass
  return platform.processor()


if __name__ == "__main__":
  sys.exit(main())
