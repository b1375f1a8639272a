"""Seeded, stratified splits: each class contributes the same fraction, so rare classes survive."""

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Returns (keep, held_out) index arrays, disjoint, covering all indices, both sorted.

  Per class, round(n * fraction) examples are held out, at least 1 when the class has 2 or more
  (a validation set without a class cannot report its recall), never all of them.
  """
  labels = np.asarray(labels)
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    n = int(round(len(idx) * fraction))
    if fraction > 0 and len(idx) >= 2:
      n = min(max(n, 1), len(idx) - 1)
    held.append(rng.permutation(idx)[:n])
  held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  keep = np.setdiff1d(np.arange(len(labels)), held)
  return keep, held


def ratio_split(labels: np.ndarray, ratios, seed: int) -> np.ndarray:
  """Per-example split names ('train', 'val'[, 'test']) at `ratios`, stratified by class.

  Test is held out first at ratios[2], then validation from the rest at ratios[1] / (ratios[0] +
  ratios[1]), each with `stratified_split`'s per-class rounding, so counts are easy to predict.
  """
  labels = np.asarray(labels)
  ratios = [float(r) for r in ratios]
  if len(ratios) not in (2, 3) or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6 or ratios[0] <= 0:
    raise ValueError(f"ratios must be 2 or 3 non-negative numbers summing to 1 (train > 0), got {ratios}")
  out = np.full(len(labels), "train", dtype=object)
  rest = np.arange(len(labels))
  if len(ratios) == 3 and ratios[2] > 0:
    keep, held = stratified_split(labels, ratios[2], seed)
    out[held] = "test"
    rest = keep
  if ratios[1] > 0:
    keep, held = stratified_split(labels[rest], ratios[1] / (ratios[0] + ratios[1]), seed + 1)
    out[rest[held]] = "val"
  return out


def group_split(labels: np.ndarray, groups, fractions: dict[str, float], seed: int) -> np.ndarray:
  """Per-example split names where every group (e.g. a patient) lands in one split.

  Groups are stratified by their most common label; within a label, shuffled groups are given to
  each held-out split (in `fractions` order) while that brings its image count closer to its
  target, at least one group when two or more remain (as stratified_split keeps rare classes),
  never the last one; the rest is train.
  """
  labels = np.asarray(labels)
  groups = np.asarray(groups, dtype=object)
  out = np.full(len(labels), "train", dtype=object)
  rng = np.random.default_rng(seed)
  members = {}
  for i, g in enumerate(groups):
    members.setdefault(g, []).append(i)
  by_label = {}
  for g, idx in members.items():
    values, counts = np.unique(labels[idx], return_counts=True)
    by_label.setdefault(int(values[np.argmax(counts)]), []).append(g)
  for label in sorted(by_label):
    names = by_label[label]
    remaining = [names[i] for i in rng.permutation(len(names))]
    total = sum(len(members[g]) for g in names)
    for split_name, fraction in fractions.items():
      target, taken = fraction * total, 0
      for g in list(remaining):
        size = len(members[g])
        if len(remaining) < 2 or fraction <= 0:
          break
        if taken == 0 or abs(taken + size - target) < abs(taken - target):
          out[members[g]] = split_name
          remaining.remove(g)
          taken += size
  return out
