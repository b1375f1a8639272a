"""Predictions in fixed-size batches: every batch, the last one padded, has one shape, so one
compiled program serves a whole split. Used for device-resident splits (by index), host image
arrays (with test-time augmentation) and streamed batches alike."""

import numpy as np

MAX_TTA = 8
SHIFT = 2  # pixels moved by the shifted test-time views


def pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
  """`rows` followed by copies of its first row up to `size` rows (padding rows are dropped)."""
  return np.concatenate([rows, np.repeat(rows[:1], size - len(rows), axis=0)])


def in_batches(predict, n: int, batch_size: int) -> np.ndarray:
  """predict(positions of one batch, padded to batch_size) for 0..n-1, concatenated, padding
  dropped: (n, ...) as numpy."""
  outputs = []
  for start in range(0, n, batch_size):
    chunk = np.arange(start, min(start + batch_size, n))
    outputs.append(np.asarray(predict(pad_rows(chunk, batch_size)))[:len(chunk)])
  return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def predict_logits(eval_step, params, batch_stats, images, index: np.ndarray, batch_size: int):
  """Logits (len(index), K) of images[index], a device-resident array gathered by index."""
  index = np.asarray(index, np.int32)
  return in_batches(lambda rows: eval_step(params, batch_stats, images, index[rows]),
                    len(index), batch_size)


def softmax_fn(model):
  """jit((variables, uint8 images (N, H, W, 3))) -> class probabilities (N, K)."""
  import jax
  return jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False)))


def tta_views(images: np.ndarray, n: int) -> list[np.ndarray]:
  """The first n of: identity, horizontal flip, then shifts by SHIFT pixels (right, left, down,
  up) and the flipped image shifted right and left. Edges are replicated. Deterministic."""
  if not 1 <= n <= MAX_TTA:
    raise ValueError(f"--tta must be between 1 and {MAX_TTA}, got {n}")
  flipped = images[:, :, ::-1]

  def shift(x, dy, dx):
    p = SHIFT
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    return padded[:, p - dy:p - dy + h, p - dx:p - dx + w]

  views = [lambda: images, lambda: flipped,
           lambda: shift(images, 0, SHIFT), lambda: shift(images, 0, -SHIFT),
           lambda: shift(images, SHIFT, 0), lambda: shift(images, -SHIFT, 0),
           lambda: shift(flipped, 0, SHIFT), lambda: shift(flipped, 0, -SHIFT)]
  return [np.ascontiguousarray(v()) for v in views[:n]]


def predict_probs(model, variables, images: np.ndarray, batch_size: int = 64, tta: int = 1,
                  predict=None):
  """Class probabilities (N, K) as float64, averaged over `tta` views (`predict`: a softmax_fn
  of `model` to reuse)."""
  predict = predict or softmax_fn(model)
  total = None
  for view in tta_views(np.asarray(images, np.uint8), tta):
    probs = in_batches(lambda rows: predict(variables, view[rows]), len(view), batch_size)
    probs = probs.astype(np.float64)
    total = probs if total is None else total + probs
  return total / tta
