"""Augmented copies of real images, made the way Kaggle dataset builders make them, so copy
detection can be measured on copies whose originals are known (benchmarks/copy_detection.py and
tests/data/test_copies.py).

One copy applies a random subset of what augmentation tools apply: one of the 8 rotations/flips,
a shift (up to 4 % of the side x `strength`), a zoom in or out (up to 4 % x `strength`), a small
rotation (up to 4 degrees x `strength`), a brightness/contrast change (up to 20 %), a resize
(0.5-1.5x) and a JPEG re-encode (quality 60-95). `KINDS` names them so a benchmark can measure
each alone; `strength` 2.5 is Keras' common `width_shift_range=0.1, zoom_range=0.1,
rotation_range=10`.
"""

import io

import numpy as np
from PIL import Image, ImageEnhance

KINDS = ("dihedral", "shift", "zoom", "rotate", "brightness", "resize", "jpeg")


def _dihedral(im, rng, strength):
  k = int(rng.integers(8))
  im = im.rotate(90 * (k % 4), expand=True)
  return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if k >= 4 else im


def _shift(im, rng, strength):
  w, h = im.size
  dx, dy = (rng.uniform(-0.04, 0.04, 2) * strength * (w, h)).round().astype(int)
  # ImageDataGenerator's default fill_mode='nearest': edge pixels repeated into the gap
  a = np.asarray(im)
  pad = ((abs(dy), abs(dy)), (abs(dx), abs(dx))) + ((0, 0),) * (a.ndim - 2)
  a = np.pad(a, pad, mode="edge")
  return Image.fromarray(a[abs(dy) - dy:abs(dy) - dy + h, abs(dx) - dx:abs(dx) - dx + w])


def _zoom(im, rng, strength):
  w, h = im.size
  z = 1 + rng.uniform(-0.04, 0.04) * strength
  cw, ch = w / z, h / z  # the box of the original that fills the copy
  box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
  if z >= 1:
    return im.resize((w, h), Image.Resampling.BILINEAR, box=box)
  small = im.resize((round(w * z), round(h * z)), Image.Resampling.BILINEAR)
  a = np.asarray(small)
  py, px = h - a.shape[0], w - a.shape[1]
  pad = ((py // 2, py - py // 2), (px // 2, px - px // 2)) + ((0, 0),) * (a.ndim - 2)
  return Image.fromarray(np.pad(a, pad, mode="edge"))


def _rotate(im, rng, strength):
  return im.rotate(float(rng.uniform(-4, 4) * strength), Image.Resampling.BILINEAR, fillcolor=0)


def _brightness(im, rng, strength):
  im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2))
  return ImageEnhance.Contrast(im).enhance(rng.uniform(0.8, 1.2))


def _resize(im, rng, strength):
  s = rng.uniform(0.5, 1.5)
  return im.resize((max(16, round(im.size[0] * s)), max(16, round(im.size[1] * s))),
                   Image.Resampling.BICUBIC)


def _jpeg(im, rng, strength):
  buf = io.BytesIO()
  im.convert("RGB").save(buf, "JPEG", quality=int(rng.integers(60, 96)))
  return Image.open(io.BytesIO(buf.getvalue())).convert(im.mode if im.mode in ("L", "RGB") else "RGB")


APPLY = {"dihedral": _dihedral, "shift": _shift, "zoom": _zoom, "rotate": _rotate,
         "brightness": _brightness, "resize": _resize, "jpeg": _jpeg}


def augmented_copy(im: Image.Image, rng: np.random.Generator, kinds=None,
                   strength: float = 1.0) -> Image.Image:
  """A copy of `im` under `kinds` (each applied), or under a random non-empty subset of KINDS
  (each kind with probability 1/2; the dihedral one always, as in the blood-cell set)."""
  if kinds is None:
    kinds = ["dihedral"] + [k for k in KINDS[1:] if rng.random() < 0.5]
  im = im.convert("L") if im.mode not in ("L", "RGB") else im
  for k in KINDS:  # fixed order: geometry first, encoding last
    if k in kinds:
      im = APPLY[k](im, rng, strength)
  return im
