"""On-device data augmentation: Keras ImageDataGenerator's transforms (plus contrast, gamma,
random erasing, mixup, cutmix) in pure JAX, with independent random parameters per example,
run inside the jitted train step.

  augment = make_augmenter(config.augment)          # None when everything is off
  images, targets = augment(rng, images, one_hot)   # float32 in [0, 255], soft labels

`config.augment` uses Keras' option names (rotation_range, width_shift_range, ..., fill_mode)
and may name a preset (`preset='mri'`, see presets.py) that explicit keys override.
Preview: python -m jaxmed.augment --config configs/demo.py --out grid.png
"""

import dataclasses

import jax
import jax.numpy as jnp

from jaxmed.augment.presets import PRESETS, resolve
from jaxmed.augment.transforms import (AugmentOptions, affine_matrix, erase, normalize, resample,
                                       sample_params, transform_image)

__all__ = ["Augmenter", "AugmentOptions", "PRESETS", "make_augmenter", "mix_batch", "resolve",
           "sample_params", "affine_matrix", "resample", "normalize"]


def mix_batch(rng, images, labels, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
  """Mixup (Zhang et al.) and/or CutMix (Yun et al.) with a random partner per example.

  Each example gets its own lambda ~ Beta(alpha, alpha); with both enabled each example picks
  one of the two with probability 1/2. CutMix labels use the box's actual (clipped) pixel
  area, so label weights equal pixel fractions exactly.
  """
  batch, height, width, _ = images.shape
  labels = labels.astype(jnp.float32)
  k_perm, k_mix, k_cut, k_pos, k_choice = jax.random.split(rng, 5)
  partner = jax.random.permutation(k_perm, batch)
  other_images, other_labels = images[partner], labels[partner]
  weights, mixed = [], []  # per-method: weight of the example itself, and the mixed images
  if mixup_alpha > 0:
    lam = jax.random.beta(k_mix, mixup_alpha, mixup_alpha, (batch,))
    weights.append(lam)
    mixed.append(lam[:, None, None, None] * images
                 + (1 - lam[:, None, None, None]) * other_images)
  if cutmix_alpha > 0:
    lam = jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha, (batch,))
    side = jnp.sqrt(1.0 - lam)  # box area fraction 1 - lam, same aspect as the image
    box_h, box_w = jnp.round(height * side), jnp.round(width * side)
    k_y, k_x = jax.random.split(k_pos)
    cy = jax.random.randint(k_y, (batch,), 0, height)
    cx = jax.random.randint(k_x, (batch,), 0, width)
    top, bottom = jnp.clip(cy - box_h // 2, 0, height), jnp.clip(cy + box_h - box_h // 2, 0, height)
    left, right = jnp.clip(cx - box_w // 2, 0, width), jnp.clip(cx + box_w - box_w // 2, 0, width)
    rows = jnp.arange(height)[None, :, None, None]
    cols = jnp.arange(width)[None, None, :, None]
    box = ((rows >= top[:, None, None, None]) & (rows < bottom[:, None, None, None])
           & (cols >= left[:, None, None, None]) & (cols < right[:, None, None, None]))
    weights.append(1.0 - (bottom - top) * (right - left) / (height * width))
    mixed.append(jnp.where(box, other_images, images))
  if len(mixed) == 2:
    use_cutmix = jax.random.bernoulli(k_choice, 0.5, (batch,))
    lam = jnp.where(use_cutmix, weights[1], weights[0])
    out = jnp.where(use_cutmix[:, None, None, None], mixed[1], mixed[0])
  else:
    lam, out = weights[0], mixed[0]
  return out, lam[:, None] * labels + (1 - lam[:, None]) * other_labels


@dataclasses.dataclass(frozen=True)
class Augmenter:
  """Callable (rng, images (B,H,W,C) uint8/float in [0,255], one-hot labels) ->
  (float32 images in [0,255], labels). Pure JAX; jit it or call it inside a jitted step."""
  options: AugmentOptions

  def sample(self, rng, batch: int, image_shape) -> dict:
    return sample_params(rng, batch, self.options, image_shape)

  def apply(self, images, params: dict, noise=None):
    """The per-example transforms with given params (no mixing); `noise` fills erased boxes."""
    images = images.astype(jnp.float32)
    out = jax.vmap(lambda image, p: transform_image(image, p, self.options))(images, params)
    if self.options.random_erasing:
      noise = jnp.zeros_like(out) if noise is None else noise
      out = jax.vmap(erase)(out, params, noise)
    return out

  def __call__(self, rng, images, labels):
    k_params, k_noise, k_mix = jax.random.split(rng, 3)
    batch, height, width = images.shape[:3]
    params = self.sample(k_params, batch, (height, width))
    noise = None
    if self.options.random_erasing:  # erased boxes get uniform noise, as in the paper
      noise = jax.random.uniform(k_noise, images.shape, jnp.float32, 0.0, 255.0)
    images = self.apply(images, params, noise)
    if self.options.mixup_alpha or self.options.cutmix_alpha:
      images, labels = mix_batch(k_mix, images, labels, self.options.mixup_alpha,
                                 self.options.cutmix_alpha)
    return images, labels


def make_augmenter(config) -> Augmenter | None:
  """An Augmenter for `config` (dict / ConfigDict, Keras option names, optional `preset`), or
  None when every option is off, so the step can skip augmentation entirely."""
  if config is None:
    return None
  options = normalize(config)
  return Augmenter(options) if options.active else None
