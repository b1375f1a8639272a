"""The order in which an epoch visits training examples: a pure function of (seed, epoch), so a
resumed run replays exactly the batches an uninterrupted run would have seen."""

import numpy as np


def epoch_order(seed: int, epoch: int, index: np.ndarray, labels: np.ndarray,
                balanced: bool = False) -> np.ndarray:
  """Shuffled `index` for one epoch; `balanced` draws (with replacement) so each class appears
  equally often in expectation, for datasets where a minority class has a few dozen images."""
  rng = np.random.default_rng([seed, epoch])
  if not balanced:
    return rng.permutation(index)
  counts = np.bincount(labels, minlength=labels.max() + 1)
  p = 1.0 / counts[labels]
  return rng.choice(index, size=len(index), replace=True, p=p / p.sum())
