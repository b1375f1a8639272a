"""Deterministic synthetic MRI-like head phantoms for jaxmed's demo config.

The images are SYNTHETIC, procedurally generated cartoons of axial head slices. They are not derived
from patient data, are not anatomically or clinically accurate, and must not be used for any
medical purpose. They exist so the demo trains end to end without a download.

`generate_phantoms` writes an ordinary label-directory tree (`ROOT/{train,test}/<class>/*.png`) so
the demo reads it back through the same loader as real data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

CLASSES = ("no_lesion", "glioma_like", "meningioma_like", "pituitary_like")
MARKER = "JAXMED_SYNTHETIC.json"
# Bump whenever the pixels change, so stale datasets on disk get regenerated instead of reused.
GENERATOR_VERSION = 1
_SPLITS = ("train", "test")


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warnings for large |x|


def _blob(x, y, cx, cy, rx, ry, angle, harmonics, edge, rng) -> np.ndarray:
  """Soft mask of an ellipse whose radius is perturbed by random angular harmonics."""
  c, s = np.cos(angle), np.sin(angle)
  u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
  rho = np.hypot(u / rx, v / ry)
  theta = np.arctan2(v, u)
  boundary = np.ones_like(rho)
  for k, amp in harmonics:
    boundary += amp * rng.uniform(0.5, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
  return _sigmoid((boundary - rho) / edge)


def _smooth_field(x, y, rng, n_waves: int, max_freq: float) -> np.ndarray:
  """Zero-mean, roughly unit-range low-frequency field: a sum of random plane waves."""
  freq = rng.uniform(0.5, max_freq, n_waves)
  ang = rng.uniform(0, 2 * np.pi, n_waves)
  phase = rng.uniform(0, 2 * np.pi, n_waves)
  proj = x[..., None] * np.cos(ang) + y[..., None] * np.sin(ang)
  return np.cos(np.pi * freq * proj + phase).mean(-1) * np.sqrt(2.0)


def _phantom(label: str, size: int, rng: np.random.Generator) -> np.ndarray:
  """One uint8 image. Coordinates are in [-1, 1] with y pointing down (image rows)."""
  px = 2.0 / size  # one pixel in normalised units; edge widths are tied to it so any size looks alike
  g = (np.arange(size) + 0.5) * px - 1.0
  y, x = np.meshgrid(g, g, indexing="ij")

  # Head pose: jitter position, size, aspect and rotation so no fixed pixel carries the label.
  cx, cy = rng.uniform(-0.09, 0.09, 2)
  a = rng.uniform(0.60, 0.78)
  b = a * rng.uniform(1.08, 1.28)
  rot = np.deg2rad(rng.uniform(-14, 14))
  c, s = np.cos(rot), np.sin(rot)
  hu = ((x - cx) * c + (y - cy) * s) / a  # head frame, unit radius at the scalp
  hv = (-(x - cx) * s + (y - cy) * c) / b
  r = np.hypot(hu, hv)
  th = np.arctan2(hv, hu)
  edge = 0.8 * px / a

  def to_img(u, v):  # head frame -> image coordinates
    return cx + u * a * c - v * b * s, cy + u * a * s + v * b * c

  head = _sigmoid((1.0 - r) / edge)
  r_in = rng.uniform(0.80, 0.85)  # inner skull radius; scalp fat sits beyond a thin dark bone band
  inner = _sigmoid((r_in - r) / edge)
  r_brain = r_in - rng.uniform(0.02, 0.04)
  # Cortical folding: a wavy grey-matter surface and a wavier grey/white boundary.
  fold = 0.015 * np.cos(rng.integers(14, 22) * th + rng.uniform(0, 6.3))
  brain = _sigmoid((r_brain + fold - r) / edge)
  wm_r = rng.uniform(0.66, 0.74) + 0.05 * np.cos(rng.integers(7, 12) * th + rng.uniform(0, 6.3))
  white = _sigmoid((wm_r - r) / (1.5 * edge))

  # T1-post-contrast-like tissue values: scalp fat bright, skull and CSF dark, WM brighter than GM.
  fat, bone, csf = rng.uniform(0.75, 0.95), rng.uniform(0.05, 0.15), rng.uniform(0.10, 0.20)
  gm, wm = rng.uniform(0.34, 0.42), rng.uniform(0.52, 0.60)
  img = head * (fat + (bone - fat) * _sigmoid((r_in + rng.uniform(0.04, 0.07) - r) / edge))
  img = img * (1 - inner) + inner * (csf + brain * (gm + (wm - gm) * white - csf))
  img += 0.06 * brain * _smooth_field(x, y, rng, 8, 6.0)  # parenchymal texture

  # Lateral ventricles (dark butterfly) near the centre; all classes have them.
  vw, vs = rng.uniform(0.07, 0.11), rng.uniform(0.10, 0.16)
  for side in (-1, 1):
    vx, vy = to_img(side * vs, rng.uniform(-0.12, 0.02))
    m = _blob(x, y, vx, vy, vw * a, rng.uniform(0.22, 0.32) * b, rot + side * 0.25,
              [(2, 0.1)], 0.7 * px, rng)
    img += m * (csf - img)
  # Distractors in every class: a few tiny bright vessel dots, so "a bright spot" alone isn't a lesion.
  for _ in range(rng.integers(0, 3)):
    rr, ang = 0.7 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    dx, dy = to_img(rr * np.cos(ang), rr * np.sin(ang))
    img += rng.uniform(0.15, 0.3) * _blob(x, y, dx, dy, 0.7 * px, 0.7 * px, 0, [], 0.5 * px, rng)

  if label == "glioma_like":  # large, irregular, infiltrative; mixed/dark core, optional bright rim
    rr, ang = rng.uniform(0.15, 0.5), rng.uniform(0, 2 * np.pi)
    lx, ly = to_img(rr * np.cos(ang), rr * np.sin(ang))
    rad = rng.uniform(0.22, 0.32) * a
    shape = [(2, 0.2), (3, 0.15), (5, 0.1)]
    ang_l = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.7, 1.0)
    edema = _blob(x, y, lx, ly, 1.5 * rad, 1.5 * rad * aspect, ang_l, shape, 3 * px, rng) * brain
    core = _blob(x, y, lx, ly, rad, rad * aspect, ang_l, shape, 1.5 * px, rng) * brain
    img += edema * rng.uniform(-0.16, -0.09)  # oedema: subtle darkening
    img += core * rng.choice([-1, 1], p=[0.7, 0.3]) * rng.uniform(0.18, 0.28)
    if rng.uniform() < 0.6:  # ring enhancement at the core boundary
      img += rng.uniform(0.15, 0.3) * 4 * core * (1 - core) * brain
  elif label == "meningioma_like":  # round, sharp, bright, sitting on the inner skull surface
    ang = rng.uniform(0, 2 * np.pi)
    rr = r_in - rng.uniform(0.0, 0.06)
    lx, ly = to_img(rr * np.cos(ang), rr * np.sin(ang))
    rad = rng.uniform(0.18, 0.26) * a
    m = _blob(x, y, lx, ly, rad, rad * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi),
              [(2, 0.05), (3, 0.03)], 0.6 * px, rng) * inner  # flattened against the skull
    img += m * (rng.uniform(0.65, 0.95) - img)
  elif label == "pituitary_like":  # small bright lesion at the centre-bottom midline
    lx, ly = to_img(rng.uniform(-0.05, 0.05), rng.uniform(0.30, 0.48))
    rad = rng.uniform(0.13, 0.18) * a
    m = _blob(x, y, lx, ly, rad, rad * rng.uniform(0.75, 1.0), rng.uniform(0, np.pi),
              [(2, 0.08)], 0.6 * px, rng)
    img += m * (rng.uniform(0.7, 0.95) - img)

  # Acquisition: bias field, global gain and gamma, slight blur, Rician noise (magnitude image).
  img *= 1.0 + 0.15 * _smooth_field(x, y, rng, 3, 1.0)
  img = np.clip(img, 0, None) ** rng.uniform(0.8, 1.25) * rng.uniform(0.7, 1.15)
  img = ndimage.gaussian_filter(img, rng.uniform(0.3, 0.7) * size / 64)
  sigma = rng.uniform(0.01, 0.03)
  img = np.hypot(img + sigma * rng.standard_normal(img.shape), sigma * rng.standard_normal(img.shape))
  return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _params(image_size, train_per_class, test_per_class, seed) -> dict:
  return {"generator_version": GENERATOR_VERSION, "classes": list(CLASSES),
          "image_size": image_size, "train_per_class": train_per_class,
          "test_per_class": test_per_class, "seed": seed}


def _read_marker(root: Path):
  try:
    return json.loads((root / MARKER).read_text())
  except (OSError, ValueError):
    return None


def generate_phantoms(root: str | Path, *, image_size: int = 64, train_per_class: int = 200,
                      test_per_class: int = 50, seed: int = 0) -> Path:
  """Writes ROOT/{train,test}/<class>/<class>_NNNNN.png atomically and returns ROOT.

  Reuses ROOT if its marker records the same parameters; replaces it if it is an older jaxmed
  synthetic dataset (marker present, parameters differ); refuses to touch anything else.
  """
  root = Path(root).absolute()
  params = _params(image_size, train_per_class, test_per_class, seed)
  if root.exists():
    marker = _read_marker(root)
    if marker == params:
      return root
    if marker is None and (not root.is_dir() or any(root.iterdir())):
      raise FileExistsError(f"{root} exists and is not a jaxmed synthetic dataset (no {MARKER}); "
                            "refusing to overwrite it. Pick another path or remove it yourself.")
  if image_size < 16:
    raise ValueError(f"image_size must be >= 16, got {image_size}")

  root.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
  try:
    counts = {"train": train_per_class, "test": test_per_class}
    for split_id, split in enumerate(_SPLITS):
      for class_id, label in enumerate(CLASSES):
        out = tmp / split / label
        out.mkdir(parents=True)
        for i in range(counts[split]):
          # One independent stream per image: files don't depend on generation order or counts.
          rng = np.random.default_rng([seed, split_id, class_id, i])
          Image.fromarray(_phantom(label, image_size, rng)).save(out / f"{label}_{i:05d}.png")
    (tmp / MARKER).write_text(json.dumps(params, indent=1) + "\n")  # written last: marks completeness
    if root.exists():  # empty dir or stale jaxmed dataset (checked above): move aside, then swap in
      old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
      os.replace(root, old / "d")
      os.replace(tmp, root)
      shutil.rmtree(old, ignore_errors=True)
    else:
      try:
        os.rename(tmp, root)
      except OSError:  # lost a race with a concurrent generator; accept its result if identical
        if _read_marker(root) != params:
          raise
        shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return root


def ensure_demo_dataset(root: str | Path) -> Path:
  """The demo config's dataset: 64 px, 200 train / 50 test images per class, seed 0."""
  return generate_phantoms(root, image_size=64, train_per_class=200, test_per_class=50, seed=0)
