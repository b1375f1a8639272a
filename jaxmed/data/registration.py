"""Registration of thumbnail pairs: how well image `a`, turned, zoomed, shifted and given a gain
and offset, matches image `b` pixel for pixel, as a whole and in its worst region. The copy finder
(data/copies.py) uses it as its last check: a copy matches its original once aligned, everywhere;
neighbouring MRI slices of one series, or one slice in two contrasts, which phase correlation
lines up just as well, do not (neighbouring slices often match as a whole, at 64 px, and differ
in one region: a tumour's outline, a ventricle).

Gauss-Newton on a similarity transform and a gain/offset, coarse on box-halved thumbnails and then
at full size, all pairs at once (numpy, batched over pairs).
"""

import numpy as np

from jaxmed.data import hashing

SIDE = hashing.COPY_SIDE
_REG_MARGIN = 3   # border (32 px) left out: edge fill of shifts, corners of turns
# (side, blur sigma, Gauss-Newton steps): coarse on box-halved thumbnails, then refined and
# scored at full size, blurred a little (resampling and JPEG noise are not differences)
_REG_STEPS = ((SIDE // 2, 1.0, 5), (SIDE, 1.0, 2))


def _grid(side: int):
  y, x = (np.mgrid[0:side, 0:side].astype(np.float32) - (side - 1) / 2).reshape(2, -1)
  margin = _REG_MARGIN * side // (SIDE // 2)
  core = np.zeros((side, side), bool)
  core[margin:-margin, margin:-margin] = True
  return y, x, core.ravel()


_GRIDS = {side: _grid(side) for side in (SIDE // 2, SIDE)}


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
  if sigma <= 0:
    return x
  r, side = int(3 * sigma), x.shape[-1]
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  x = np.pad(x, ((0, 0), (r, r), (r, r)), mode="edge")
  x = sum(k[i] * x[:, i:i + side] for i in range(2 * r + 1))
  return sum(k[i] * x[:, :, i:i + side] for i in range(2 * r + 1)).astype(np.float32)


def _warp(img: np.ndarray, p: np.ndarray):
  """img (n, side, side) sampled (bilinear) at the similarity warp p (n, 4) = (scale*cos - 1,
  scale*sin, dx, dy) of each pixel: (values (n, side^2), inside the image's core (n, side^2))."""
  n, side = len(img), img.shape[-1]
  ry, rx, core = _GRIDS[side]
  c = (side - 1) / 2
  sx = (1 + p[:, :1]) * rx - p[:, 1:2] * ry + c + p[:, 2:3]
  sy = p[:, 1:2] * rx + (1 + p[:, :1]) * ry + c + p[:, 3:4]
  inside = (sy >= 0) & (sy <= side - 1) & (sx >= 0) & (sx <= side - 1)
  sy, sx = np.clip(sy, 0, side - 1.001), np.clip(sx, 0, side - 1.001)
  y0, x0 = np.floor(sy), np.floor(sx)
  fy, fx = sy - y0, sx - x0
  flat, base = img.reshape(n, -1), (y0 * side + x0).astype(np.int64)
  at = lambda o: np.take_along_axis(flat, base + o, 1)
  values = ((at(0) * (1 - fx) + at(1) * fx) * (1 - fy)
            + (at(side) * (1 - fx) + at(side + 1) * fx) * fy)
  return values.astype(np.float32), inside & core


def _fit(w, t, m):
  """Per row, over mask m: the correlation of w and t, the gain of the gain/offset fit of w to t
  and its residual."""
  count = m.sum(1, keepdims=True) + 1e-6
  w = (w - (m * w).sum(1, keepdims=True) / count) * m
  t = (t - (m * t).sum(1, keepdims=True) / count) * m
  ww, tt, wt = (w * w).sum(1), (t * t).sum(1), (w * t).sum(1)
  gain = (wt / (ww + 1e-6))[:, None]
  return wt / np.sqrt(ww * tt + 1e-12), gain, gain * w - t


def aligned_correlation(a: np.ndarray, b: np.ndarray, shift: np.ndarray) -> np.ndarray:
  """Correlation of image pairs (n, SIDE, SIDE) x 2 once `a` is registered onto `b` by a
  similarity transform (turn, zoom, shift; from `shift` (n, 2), a[p] ~ b[p - shift]) and a
  gain/offset: near 1 for copies, lower for distinct images that phase correlation lines up."""
  return aligned_scores(a, b, shift)[0]


def aligned_scores(a: np.ndarray, b: np.ndarray, shift: np.ndarray):
  """(correlation as in aligned_correlation, the lowest correlation of one region), each (n,)."""
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  half = lambda x: x.reshape(len(x), SIDE // 2, 2, SIDE // 2, 2).mean(axis=(2, 4), dtype=np.float32)
  p = np.zeros((len(a), 4), np.float32)
  p[:, 2], p[:, 3] = shift[:, 1] / 2, shift[:, 0] / 2  # b[q] ~ a[q + shift]
  side = SIDE // 2
  for new_side, sigma, steps in _REG_STEPS:
    p[:, 2:] *= new_side / side
    side = new_side
    ab = _blur(a if side == SIDE else half(a), sigma)
    t = _blur(b if side == SIDE else half(b), sigma).reshape(len(b), -1)
    gy, gx = np.gradient(ab, axis=(1, 2))
    ry, rx, _ = _GRIDS[side]
    for _ in range(steps):
      w, m = _warp(ab, p)
      _, gain, residual = _fit(w, t, m)
      wx, wy = _warp(gx, p)[0] * m * gain, _warp(gy, p)[0] * m * gain
      jac = np.stack([wx * rx + wy * ry, wy * rx - wx * ry, wx, wy], 2)
      hessian = np.einsum("nki,nkj->nij", jac, jac) + 1e-3 * np.eye(4, dtype=np.float32)
      p = p - np.linalg.solve(hessian, np.einsum("nki,nk->ni", jac, residual)[..., None])[..., 0]
  w, m = _warp(ab, p)
  return _fit(w, t, m)[0], worst_region(w, t, m)


_REGION = SIDE // 4    # 16x16-pixel regions of the 64 px thumbnail: a 4x4 grid
_REGION_MIN_SD = 4.0   # grey levels: a region flatter than this (background) is not scored


def worst_region(w: np.ndarray, t: np.ndarray, m: np.ndarray) -> np.ndarray:
  """Per pair, the lowest correlation over the _REGION-square regions of the aligned images w, t
  (n, SIDE^2) that lie mostly inside mask m and hold structure in both (each with its own
  gain/offset, so a contrast curve or a vignette is not a difference); 1 where none does."""
  n, k = len(w), SIDE // _REGION
  blocks = lambda x: (x.reshape(n, k, _REGION, k, _REGION).transpose(0, 1, 3, 2, 4)
                      .reshape(n, k * k, _REGION * _REGION).astype(np.float32))
  mb = blocks(m)
  count = mb.sum(2)
  centred = lambda x: (x - (x * mb).sum(2, keepdims=True) / (count[..., None] + 1e-6)) * mb
  wc, tc = centred(blocks(w)), centred(blocks(t))
  ww, tt = (wc * wc).sum(2), (tc * tc).sum(2)
  corr = (wc * tc).sum(2) / np.sqrt(ww * tt + 1e-9)
  scored = ((count >= 0.8 * _REGION * _REGION)
            & (np.minimum(ww, tt) > _REGION_MIN_SD ** 2 * np.maximum(count, 1)))
  return np.where(scored, corr, np.inf).min(1).clip(max=1.0)
