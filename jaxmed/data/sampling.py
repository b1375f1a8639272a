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


def epoch_batches(seed: int, epoch: int, labels: np.ndarray, batch_size: int,
                  balanced: bool = False, start_step: int = 0) -> np.ndarray:
  """(steps_per_epoch - start_step, batch_size) indices into the train split: the epoch's order
  cut into full batches (a last partial batch is dropped), from step `start_step` on. Both input
  paths (jaxmed/training/input_path.py) train on exactly these batches."""
  order = epoch_order(seed, epoch, np.arange(len(labels), dtype=np.int32), labels, balanced)
  steps = len(order) // batch_size
  return order[:steps * batch_size].reshape(steps, batch_size)[start_step:]
