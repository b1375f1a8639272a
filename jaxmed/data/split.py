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
