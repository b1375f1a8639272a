"""Copy clusters: images that are augmented copies of one original (rotated or flipped, shifted,
zoomed, re-encoded, resized, brightened), found so that a split can keep each cluster on one side.

Kaggle datasets such as the blood-cell set ship dozens of augmented copies per original; a
validation split carved at random from such a train split holds copies of training images and
flatters the model. A plain perceptual hash misses most of them, because most are rotated or
flipped. Three stages, all on 64x64 grayscale thumbnails that `hashing.probe` keeps:

1. Candidates: every image's nearest neighbours (`NEIGHBOURS` each) under two global
   descriptors, each compared under the 8 rotations/flips: low DCT frequencies of the central 70 %
   (tolerates re-encoding, resizing, brightness, small zoom and rotation) and low-frequency
   Fourier magnitudes (tolerate shifts). Brute force: n^2 x 8 dot products per descriptor.
2. Verification: phase correlation of each candidate pair under the rotation/flip that matched,
   low-passed: a copy gives one sharp peak, distinct images of one kind (two chest X-rays, whose
   ribs line up at several shifts) a flat surface; the peak-to-sidelobe ratio at `MIN_PSR`
   separates them. Pairs that nearly pass are scored again under small turns and zooms (which
   phase correlation does not undo).
3. Pixel check: neighbouring MRI slices of one series, or one slice in two contrasts, also give
   one sharp peak; registered onto each other (turn, zoom, shift, gain), a copy matches pixel
   for pixel, in every region, and they do not: pairs whose aligned correlation is under
   `MIN_ALIGNED`, or whose worst 16x16 region's is under `MIN_REGION` (neighbouring slices
   that match as a whole differ at a tumour's outline), are dropped. Verified pairs and
   byte-identical files are joined into clusters (union-find), two clusters only where their
   first members match too (`_linked`), which shortens chains.

`MIN_PSR`, `RESCUE_PSR`, `NEIGHBOURS`, `MIN_ALIGNED` and `MIN_REGION` were chosen on copies made
from the shared chest X-ray and brain MRI train images and on real brain MRI pairs looked at by
eye (benchmarks/copy_detection.py --quick, 2026-12-03, 2 shared cores): pair recall 0.998 and
precision 1.000 on chest X-ray copies with shifts and zooms up to 4 % (brain MRI 0.987 / 0.922,
its own copies of a slice counted as errors). Of the real splits, 0.96 % of chest X-rays land in
a cluster (all byte-identical files; none spans two patient ids, 0.31 % before the pixel check)
and 65.3 % of brain MRIs (the Kaggle set holds many re-exported and contrast-edited copies of one
slice); 12.2 % of brain MRIs are in a cluster with a pair that fails the pixel check, and by eye
(every such cluster's weakest pair) 3 of those 52 clusters, 12 images (0.2 %), hold distinct
slices, the rest edited copies of one slice. Measured again with scipy's FFT (float32 rounding
moves a few near-tied neighbours; --quick, 2026-12-03, JSON
benchmarks/results/copy_detection_quick_scipy_fft_py311_2026-12-03.json): the same figures but
brain MRI recall 0.988 and 12.0 % in 52 clusters with a failing pair. `find_copies` alone, numpy's
FFT then scipy's, 2-core AMD EPYC, Python 3.11: 57.9 -> 26.6 s on the 5,216 chest X-ray
thumbnails, 89.3 -> 68.0 s on the 5,708 brain MRIs (there the pixel checks dominate).
"""

import dataclasses
import time

import numpy as np
# scipy's pocketfft keeps float32 and takes threads: on (4096, 64, 64) batches on a 2-core CPU its
# rfft2 ran in 25 ms against numpy's 187 (2026-12-03), and FFTs were most of `find_copies`.
from scipy import fft

from jaxmed.data import hashing
from jaxmed.data.registration import aligned_scores

SIDE = hashing.COPY_SIDE
NEIGHBOURS = 8     # candidates per image and descriptor
MIN_PSR = 22.0     # phase-correlation peak-to-sidelobe ratio at or above which a pair is a copy
RESCUE_PSR = 10.0  # from here to MIN_PSR, a pair is tried again under small turns and zooms
_DCT_SIDE, _DCT_K, _CENTRE = 32, 6, 0.7
_FFT_SIDE, _FFT_K = 32, 6


def dihedral(a: np.ndarray, t: int) -> np.ndarray:
  """The t-th of the 8 rotations/flips (t in 0..7) of the last two axes."""
  b = np.rot90(a, t % 4, axes=(-2, -1))
  return b[..., ::-1] if t >= 4 else b


def _dct_matrix(n: int) -> np.ndarray:
  k = np.arange(n)[:, None]
  m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
  m[0] /= np.sqrt(2.0)
  return m


def _resample_matrix(out: int, start: float, length: float) -> np.ndarray:
  """(out, SIDE) linear interpolation of [start, start + length) (fractions of the side)."""
  pos = (start + (np.arange(out) + 0.5) / out * length) * SIDE - 0.5
  lo = np.clip(np.floor(pos).astype(int), 0, SIDE - 1)
  frac = pos - np.floor(pos)
  m = np.zeros((out, SIDE))
  np.add.at(m, (np.arange(out), lo), 1 - frac)
  np.add.at(m, (np.arange(out), np.minimum(lo + 1, SIDE - 1)), frac)
  return m


_DCT_MAP = (_dct_matrix(_DCT_SIDE)[:_DCT_K]
            @ _resample_matrix(_DCT_SIDE, (1 - _CENTRE) / 2, _CENTRE)).astype(np.float32)
_FFT_DOWN = _resample_matrix(_FFT_SIDE, 0.0, 1.0).astype(np.float32)
_HANN = np.outer(np.hanning(_FFT_SIDE), np.hanning(_FFT_SIDE)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
  x = x.reshape(x.shape[0], -1)
  x = x - x.mean(1, keepdims=True)
  return (x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)).astype(np.float32)


def dct_descriptor(gray: np.ndarray) -> np.ndarray:
  """(n, K*K-1) unit vectors: low DCT frequencies of the central 70 %, without the mean."""
  c = _DCT_MAP @ gray @ _DCT_MAP.T
  return _unit(c.reshape(len(gray), -1)[:, 1:])


def fourier_descriptor(gray: np.ndarray) -> np.ndarray:
  """(n, d) unit vectors: log magnitudes of the lowest Fourier frequencies of the windowed
  image, which a shift (circular, and nearly so with a window) leaves unchanged."""
  small = _FFT_DOWN @ gray @ _FFT_DOWN.T
  small = (small - small.mean(axis=(1, 2), keepdims=True)) * _HANN
  mag = np.abs(fft.rfft2(small, workers=-1))
  # rfft2 keeps half the plane: the lowest positive and negative row frequencies
  low = np.concatenate([mag[:, :_FFT_K, :_FFT_K].reshape(len(gray), -1),
                        mag[:, -_FFT_K + 1:, 1:_FFT_K].reshape(len(gray), -1)], axis=1)
  return _unit(np.log1p(low)[:, 1:])  # without the mean (zeroed above)


def nearest(descriptor, gray: np.ndarray, k: int, chunk: int = 256) -> tuple[np.ndarray, ...]:
  """Each image's k nearest others by max-over-rotations/flips cosine: (index, t, similarity),
  each (n, k), where t is the rotation/flip of image i that best matches image j."""
  n = len(gray)
  ref = descriptor(gray)
  k = min(k, n - 1)
  idx = np.zeros((n, k), np.int64)
  best_t = np.zeros((n, k), np.int8)
  sim = np.zeros((n, k), np.float32)
  for s in range(0, n, chunk):
    block = gray[s:s + chunk]
    turned = np.stack([descriptor(np.ascontiguousarray(dihedral(block, t))) for t in range(8)], 1)
    scores = turned @ ref.T                      # (b, 8, n)
    t_arg = scores.argmax(1)
    top = np.take_along_axis(scores, t_arg[:, None], 1)[:, 0]
    top[np.arange(len(block)), np.arange(s, s + len(block))] = -np.inf  # not itself
    part = np.argpartition(-top, k - 1, axis=1)[:, :k]
    idx[s:s + chunk] = part
    best_t[s:s + chunk] = np.take_along_axis(t_arg, part, 1)
    sim[s:s + chunk] = np.take_along_axis(top, part, 1)
  return idx, best_t, sim


_FY = np.fft.fftfreq(SIDE)[:, None]
_FX = np.fft.rfftfreq(SIDE)[None, :]
_LOW_PASS = (np.hypot(_FY, _FX) < 0.25).astype(np.float32)
_WINDOW = np.outer(np.hanning(SIDE), np.hanning(SIDE)).astype(np.float32)
_PEAK_HALF = 2  # the peak's (5x5) neighbourhood, left out of the sidelobe statistics
# Phase correlation finds shifts, not turns or zooms: a pair that scores between RESCUE_PSR and
# MIN_PSR is scored again with the first image turned by up to 8 degrees and zoomed by up to 8 %,
# which brings Keras-style rotation_range=10 / zoom_range=0.1 copies above MIN_PSR (measured).
_TURNS = tuple((angle, zoom) for angle in (-8, -4, 0, 4, 8) for zoom in (0.92, 1.0, 1.08)
               if (angle, zoom) != (0, 1.0))


def _sampling(angle_degrees: float, zoom: float):
  """Bilinear sampling of an image turned by `angle_degrees` and zoomed about its centre:
  (flat corner indices (4, SIDE^2), weights (4, SIDE^2)), edges clamped."""
  a, centre = np.deg2rad(angle_degrees), (SIDE - 1) / 2
  y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) - centre
  sy = np.clip((np.cos(a) * y - np.sin(a) * x) / zoom + centre, 0, SIDE - 1.001)
  sx = np.clip((np.sin(a) * y + np.cos(a) * x) / zoom + centre, 0, SIDE - 1.001)
  y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
  fy, fx = sy - y0, sx - x0
  corner = y0 * SIDE + x0
  index = np.stack([corner, corner + SIDE, corner + 1, corner + SIDE + 1])
  weight = np.stack([(1 - fy) * (1 - fx), fy * (1 - fx), (1 - fy) * fx, fy * fx]).astype(np.float32)
  return index.reshape(4, -1), weight.reshape(4, -1)


_SAMPLINGS = [_sampling(angle, zoom) for angle, zoom in _TURNS]


def turned_peak_to_sidelobe(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The best peak_to_sidelobe over small turns and zooms of `a` (_TURNS), and none, and `a`
  under the turn and zoom that gave it."""
  b_spectrum = _spectrum(b)
  best, best_a = peak_to_sidelobe(a, b_spectrum), a.copy()
  pixels_first = np.ascontiguousarray(a.reshape(len(a), -1).T)  # gathers whole rows: 3x faster
  for index, weight in _SAMPLINGS:
    turned = sum(pixels_first[index[k]] * weight[k][:, None] for k in range(4)).T.reshape(a.shape)
    score = peak_to_sidelobe(turned, b_spectrum)
    better = score > best
    best, best_a[better] = np.maximum(best, score), turned[better]
  return best, best_a


def _spectrum(x: np.ndarray) -> np.ndarray:
  x = x - x.mean(axis=(1, 2), keepdims=True)
  return fft.rfft2(x * _WINDOW, workers=-1)


def peak_to_sidelobe(a: np.ndarray, b: np.ndarray, shift: bool = False):
  """Peak-to-sidelobe ratio of the low-passed phase correlation of image pairs (n, SIDE, SIDE)
  x 2: how far the best shift's peak stands above the rest of the surface, in its standard
  deviations. A copy (shifted, re-encoded, brightened) gives one sharp peak; two distinct chest
  X-rays, whose ribs line up at several shifts, give a flat surface or several low peaks.
  `b` may be given as its `_spectrum` (complex), when it is compared more than once. With
  `shift`, also the peak's (dy, dx) per pair (n, 2): a[p] ~ b[p - shift]."""
  b_spectrum = b if np.iscomplexobj(b) else _spectrum(b)
  cross = _spectrum(a) * np.conj(b_spectrum)
  cross = cross / (np.abs(cross) + 1e-6) * _LOW_PASS
  surface = fft.irfft2(cross, s=(SIDE, SIDE), workers=-1).reshape(len(a), -1)
  rows = np.arange(len(a))
  top = surface.argmax(1)
  y, x = np.divmod(top, SIDE)
  near = np.arange(-_PEAK_HALF, _PEAK_HALF + 1)
  window = (((y[:, None, None] + near[None, :, None]) % SIDE) * SIDE
            + (x[:, None, None] + near[None, None, :]) % SIDE).reshape(len(a), -1)
  peak_values = np.take_along_axis(surface, window, 1)
  rest = surface.shape[1] - window.shape[1]  # sidelobe statistics: the surface less the window
  mean = (surface.sum(1) - peak_values.sum(1)) / rest
  var = ((surface ** 2).sum(1) - (peak_values ** 2).sum(1)) / rest - mean ** 2
  psr = (surface[rows, top] - mean) / np.sqrt(np.maximum(var, 1e-24))
  if not shift:
    return psr
  return psr, (np.stack([y, x], 1) + SIDE // 2) % SIDE - SIDE // 2


# A copy, once registered (data/registration.py), matches its original pixel for pixel;
# neighbouring MRI slices, or one slice in two contrasts, pass MIN_PSR but differ in detail.
# Measured on 2026-12-02 (150 originals x 3 pairs per split, copy_maker strength 1, passing
# MIN_PSR): original-copy pairs' aligned correlation 1st percentile 0.991 (brain MRI), 0.998
# (chest X-ray); 40 % of 800 sampled brain pairs that passed MIN_PSR alone fall below 0.99 (by
# eye: neighbouring slices, two contrasts, sharpened or smoothed versions of one slice).
MIN_ALIGNED = 0.99
# Neighbouring slices that match as a whole (0.99 and more at 64 px) still differ in one region:
# a tumour's outline, a ventricle. So each 16x16 region that holds structure must match too
# (registration.worst_region, each region with its own gain/offset). Measured on 2026-12-03 on
# the 2,201 brain MRI pairs that passed MIN_ALIGNED, the originals looked at side by side for
# 95 of them across the range: the 21 that showed neighbouring slices all had a worst region
# under 0.93 (the highest 0.921, 17 under 0.90); of the 33 from 0.93 up, 32 were copies and one
# unclear. About 30 copies under 0.93 were edited with a local contrast tool or heavy sharpening
# (re-exported FLAIR images): those pairs are split, and such a copy still joins its cluster
# through another member where one matches. Built copies (copy_maker strength 1, 300 pairs)
# that pass MIN_ALIGNED fall under 0.93 in 0.7 % of pairs.
MIN_REGION = 0.93


@dataclasses.dataclass
class Copies:
  """What `find_copies` found: `cluster` (n,) an id per image (equal ids = one cluster; ids are
  the smallest member index), `pairs` verified (i, j, peak-to-sidelobe ratio, aligned
  correlation; a pair already joined through others is not checked, nor listed), `stats`
  (seconds per stage, pair counts)."""
  cluster: np.ndarray
  pairs: list
  stats: dict

  def clusters(self) -> list[list[int]]:
    """Clusters of two or more images, largest first."""
    groups = {}
    for i, c in enumerate(self.cluster.tolist()):
      groups.setdefault(c, []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


class _Forest:
  """Union-find over n items; the root of a set is its smallest member."""

  def __init__(self, n: int):
    self.parent = list(range(n))

  def find(self, i: int) -> int:
    parent = self.parent
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  def join(self, i: int, j: int):
    ri, rj = self.find(i), self.find(j)
    if ri != rj:
      self.parent[max(ri, rj)] = min(ri, rj)

  def roots(self) -> np.ndarray:
    return np.array([self.find(i) for i in range(len(self.parent))], np.int64)


def _union_find(n: int, pairs) -> np.ndarray:
  forest = _Forest(n)
  for i, j in pairs:
    forest.join(i, j)
  return forest.roots()


def _candidates(gray: np.ndarray, neighbours: int, stats: dict) -> np.ndarray:
  """(i, j, t) rows, i < j: the pairs either descriptor puts among an image's nearest, with the
  rotation/flip t of image i that matched image j."""
  candidates = set()
  for name, descriptor in (("dct", dct_descriptor), ("fourier", fourier_descriptor)):
    start = time.perf_counter()
    idx, best_t, _ = nearest(descriptor, gray, neighbours)
    for i in range(len(gray)):
      for j, t in zip(idx[i].tolist(), best_t[i].tolist()):
        candidates.add((i, j, t) if i < j else (j, i, _inverse(t)))
    stats[f"candidates_{name}_s"] = round(time.perf_counter() - start, 2)
  return np.array(sorted(candidates), np.int64).reshape(-1, 3)


def find_copies(gray: np.ndarray, digests=None, *, min_psr: float = MIN_PSR,
                min_aligned: float = MIN_ALIGNED, neighbours: int = NEIGHBOURS,
                chunk: int = 4096) -> Copies:
  """Copy clusters among images `gray` (n, SIDE, SIDE), uint8 or float; `digests` (sha256 per
  image, None for unknown) joins byte-identical files whatever their pixels say."""
  gray = np.asarray(gray, np.float32)
  n = len(gray)
  stats = {}
  forest = _Forest(n)
  first = {}
  for i, d in enumerate(digests if digests is not None else []):
    if d is not None:
      forest.join(first.setdefault(d, i), i)
  cand = _candidates(gray, neighbours, stats) if n > 1 else np.zeros((0, 3), np.int64)
  start = time.perf_counter()

  def turned(c):  # image i of each (i, j, t) under its rotation/flip t, one batch per t
    out = np.empty((len(c), SIDE, SIDE), np.float32)
    for t in range(8):
      rows = np.flatnonzero(c[:, 2] == t)
      out[rows] = dihedral(gray[c[rows, 0]], t)
    return out

  pairs, retry, aligned = [], [], [0]

  def confirm(c, a, score, shift):  # the pairs that pass, aligned pixel by pixel; joined
    keep = np.flatnonzero((score >= min_psr)
                          & np.array([forest.find(int(i)) != forest.find(int(j)) for i, j, _ in c]))
    if not len(keep):
      return
    if shift is None:
      shift = peak_to_sidelobe(a[keep], gray[c[keep, 1]], shift=True)[1]
    else:
      shift = shift[keep]
    r, region = aligned_scores(a[keep], gray[c[keep, 1]], shift)
    aligned[0] += len(keep)
    for (i, j, _), p, q, q_region in zip(c[keep], score[keep], r, region):
      ri, rj = forest.find(int(i)), forest.find(int(j))
      if (q >= min_aligned and q_region >= MIN_REGION and ri != rj
          and ((ri, rj) == (i, j) or _linked(gray, ri, rj))):
        pairs.append((int(i), int(j), round(float(p), 1), round(float(q), 4)))
        forest.join(ri, rj)

  # strongest peaks first: a pair already joined through others needs no pixel check
  for s in range(0, len(cand), chunk):
    c = cand[s:s + chunk]
    a = turned(c)
    score, shift = peak_to_sidelobe(a, gray[c[:, 1]], shift=True)
    order = np.argsort(-score)
    confirm(c[order], a[order], score[order], shift[order])
    retry.append(c[(score >= RESCUE_PSR) & (score < min_psr)])
  # near misses, unless already joined through other pairs (most, in a heavily copied set)
  retry = np.concatenate(retry) if retry else np.zeros((0, 3), np.int64)
  if len(retry):
    retry = retry[[forest.find(int(i)) != forest.find(int(j)) for i, j, _ in retry]]
  for s in range(0, len(retry), chunk):
    c = retry[s:s + chunk]
    score, a = turned_peak_to_sidelobe(turned(c), gray[c[:, 1]])
    confirm(c, a, score, None)
  stats.update(verify_s=round(time.perf_counter() - start, 2), candidate_pairs=len(cand),
               retried_pairs=len(retry), aligned_pairs=aligned[0], verified_pairs=len(pairs))
  return Copies(forest.roots(), pairs, stats)


# Single linkage chains neighbouring slices (each pair near-identical) across a whole series:
# two clusters join only if their first members also align as copies, at a looser bar than
# MIN_ALIGNED since both may be augmented (built strength-1 brain MRI copies, 2026-12-02: 98 % of
# copy-copy pairs at 0.99 or more, the rest mostly pairs whose rotation/flip no peak found).
_MIN_LINKED = 0.98


def _linked(gray: np.ndarray, i: int, j: int) -> bool:
  """Whether images i and j align as copies under their best rotation/flip."""
  whole, region = best_turn_scores(gray[i:i + 1], gray[j:j + 1])
  return bool(whole[0] >= _MIN_LINKED and region[0] >= MIN_REGION)


def best_turn_scores(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """registration.aligned_scores (whole, worst region) of the pairs a[k], b[k] (n, SIDE, SIDE)
  under the rotation/flip of a[k] and the shift whose phase correlation peaks highest: for pairs
  whose turn is not known (a candidate's is, from its descriptor)."""
  turned = np.stack([np.ascontiguousarray(dihedral(a, t)) for t in range(8)])
  scored = [peak_to_sidelobe(x, b, shift=True) for x in turned]
  best, rows = np.argmax([score for score, _ in scored], 0), np.arange(len(a))
  shift = np.stack([d for _, d in scored])[best, rows]
  return aligned_scores(turned[best, rows], b, shift)


def _inverse(t: int) -> int:
  """The rotation/flip that undoes t: rotations invert to the opposite turn, flips to themselves."""
  return (4 - t) % 4 if t < 4 else t



def among_probes(probes) -> tuple[np.ndarray, Copies]:
  """Copy clusters among the decodable ones of `hashing.probe` results: (their indices, Copies
  over them, in that order)."""
  ok = np.array([i for i, p in enumerate(probes) if p.error is None], np.int64)
  gray = np.stack([probes[i].gray for i in ok]) if len(ok) else np.zeros((0, SIDE, SIDE))
  return ok, find_copies(gray, [probes[i].sha256 for i in ok])


def copy_keys(refs, workers=None) -> tuple[list[str], Copies]:
  """A group key per file (its copy cluster; an unreadable file is its own group) and what was
  found: reads every file once (hashing.probe) and clusters the readable ones."""
  ok, found = among_probes(hashing.probe_all(refs, workers))
  keys = [f"f:{r}" for r in refs]
  for k, i in enumerate(ok):
    keys[i] = f"copies:{ok[int(found.cluster[k])]}"
  return keys, found


def union_of(*keyings) -> list[int]:
  """One id per item joining items that share a key in any of the keyings (each a list of keys
  of the same length): a patient id and a copy cluster together."""
  n = len(keyings[0])
  pairs = []
  for keys in keyings:
    first = {}
    pairs += [(first.setdefault(k, i), i) for i, k in enumerate(keys)]
  return _union_find(n, pairs).tolist()
