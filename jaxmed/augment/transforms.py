"""Keras ImageDataGenerator's random transforms in JAX, per example, inside the jitted step.

Parameters are sampled as `get_random_transform` samples them and applied with
`apply_affine_transform`'s matrix conventions (a 3x3 matrix mapping each output pixel to the
input point it reads, built about the image centre, resampled bilinearly like scipy's order-1
`affine_transform` with the same fill modes). Rotation, shift, shear, zoom and both flips are
folded into ONE matrix per image, so every image is interpolated once.

One deliberate difference: Keras 3's legacy generator applies `width_shift_range` vertically
and `height_shift_range` horizontally, and centres non-square images on (w/2, h/2) swapped (its
(x, y)/(row, col) swap in `apply_affine_transform`). Here `width_shift_range` shifts along the
width and the centre is the true centre, as Keras documents. For square images and equal shift
ranges (the usual config) the distributions are identical.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxmed.augment import presets

FILL_MODES = ("nearest", "constant", "reflect", "wrap")
# Pixels: absorbs float32 round-off at the edges (cos(90 deg) != 0) where 'constant' and 'wrap'
# are discontinuous; scipy, in float64, lands exactly on the edge.
_EDGE_TOLERANCE = 1e-3
# Keras generator options that are not transforms here (the model's preprocessing normalises,
# the trainer splits), with the only value accepted for each, so a ported config fails loudly.
_NOT_TRANSFORMS = {"featurewise_center": False, "samplewise_center": False,
                   "featurewise_std_normalization": False, "samplewise_std_normalization": False,
                   "zca_whitening": False, "zca_epsilon": None, "rescale": None,
                   "preprocessing_function": None, "validation_split": 0.0,
                   "data_format": "channels_last", "interpolation_order": 1, "dtype": None}


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
  """Normalised options (hashable, so an Augmenter can be a static jit argument)."""
  rotation_range: float = 0.0
  width_shift_range: object = 0.0    # float, int or tuple, Keras semantics
  height_shift_range: object = 0.0
  shear_range: float = 0.0
  zoom_range: tuple = (1.0, 1.0)
  horizontal_flip: bool = False
  vertical_flip: bool = False
  brightness_range: tuple | None = None
  channel_shift_range: float = 0.0
  fill_mode: str = "nearest"
  cval: float = 0.0
  contrast_range: tuple | None = None
  gamma_range: tuple | None = None
  random_erasing: float = 0.0                 # probability per image
  erasing_area: tuple = (0.02, 0.2)          # fraction of the image area
  erasing_aspect: tuple = (0.3, 1 / 0.3)     # height / width of the erased box
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0

  @property
  def geometric(self) -> bool:
    return bool(self.rotation_range or self.width_shift_range or self.height_shift_range
                or self.shear_range or self.zoom_range != (1.0, 1.0)
                or self.horizontal_flip or self.vertical_flip)

  @property
  def active(self) -> bool:
    return bool(self.geometric or self.brightness_range or self.channel_shift_range
                or self.contrast_range or self.gamma_range or self.random_erasing
                or self.mixup_alpha or self.cutmix_alpha)


def _pair(value, name):
  value = tuple(float(v) for v in value)
  if len(value) != 2 or value[0] > value[1]:
    raise ValueError(f"augment.{name} must be [lo, hi] with lo <= hi, got {value}")
  return value


def normalize(config) -> AugmentOptions:
  """dict / ConfigDict (optionally with `preset`) -> AugmentOptions; unknown keys raise."""
  if isinstance(config, AugmentOptions):
    return config
  options = presets.resolve(config)
  for key, accepted in _NOT_TRANSFORMS.items():
    value = options.pop(key, accepted)
    if value != accepted and not (key == "rescale" and value == 1):
      raise ValueError(f"augment.{key}={value!r} is not supported (only {accepted!r}): images "
                       f"stay in [0, 255], the model's preprocessing normalises them")
  known = {f.name for f in dataclasses.fields(AugmentOptions)}
  unknown = sorted(set(options) - known)
  if unknown:
    raise ValueError(f"unknown augment option(s) {unknown}; known: {sorted(known)}")
  zoom = options.get("zoom_range", 0.0)
  if isinstance(zoom, (int, float)):  # Keras: z -> [1 - z, 1 + z]
    zoom = (1.0 - zoom, 1.0 + zoom)
  options["zoom_range"] = _pair(zoom, "zoom_range")
  for key in ("brightness_range", "contrast_range", "gamma_range"):
    if options.get(key) is not None:
      options[key] = _pair(options[key], key)
  for key in ("erasing_area", "erasing_aspect"):
    if key in options:
      options[key] = _pair(options[key], key)
  for key in ("width_shift_range", "height_shift_range"):
    value = options.get(key, 0.0)
    if isinstance(value, (list, tuple)):
      value = tuple(value)
    elif not isinstance(value, int) or isinstance(value, bool):
      value = float(value or 0.0)
    options[key] = value
  for key in ("horizontal_flip", "vertical_flip"):
    options[key] = bool(options.get(key, False))
  if options.get("fill_mode", "nearest") not in FILL_MODES:
    raise ValueError(f"augment.fill_mode must be one of {FILL_MODES}, got {options['fill_mode']!r}")
  return AugmentOptions(**options)


# ---------------------------------------------------------------------------- sampling

def _shift(key, batch, value, size):
  """Keras' width/height_shift_range: float -> uniform, int / list -> choice x random sign;
  values (all) below 1 are fractions of the image size."""
  if not value:
    return jnp.zeros((batch,), jnp.float32)
  k_value, k_sign = jax.random.split(key)
  if isinstance(value, float):
    shift = jax.random.uniform(k_value, (batch,), minval=-value, maxval=value)
  else:  # np.random.choice(int) draws from range(int); from the values for a list
    choices = jnp.arange(value) if isinstance(value, int) else jnp.asarray(value, jnp.float32)
    shift = choices[jax.random.randint(k_value, (batch,), 0, choices.shape[0])]
    shift = shift * jax.random.choice(k_sign, jnp.array([-1.0, 1.0]), (batch,))
  scale = size if max(value if isinstance(value, tuple) else (value,)) < 1 else 1.0
  return (shift * scale).astype(jnp.float32)


def _uniform(key, batch, bounds, identity):
  if bounds is None:
    return jnp.full((batch,), identity, jnp.float32)
  return jax.random.uniform(key, (batch,), minval=bounds[0], maxval=bounds[1])


def sample_params(rng, batch: int, config, image_shape) -> dict:
  """Per-example transform parameters, each an array of shape (batch,).

  Keys follow Keras' `apply_transform`: theta, shear (degrees); tx, ty (pixels, x = column);
  zx, zy; flip_horizontal, flip_vertical; channel_shift_intensity; brightness; plus contrast,
  gamma and the erased box (erase, erase_top, erase_left, erase_height, erase_width).
  Disabled options get their identity value.
  """
  o = normalize(config)
  height, width = image_shape[:2]
  keys = iter(jax.random.split(rng, 16))
  symmetric = lambda r: _uniform(next(keys), batch, (-r, r) if r else None, 0.0)
  p = {"theta": symmetric(o.rotation_range),
       "tx": _shift(next(keys), batch, o.width_shift_range, width),
       "ty": _shift(next(keys), batch, o.height_shift_range, height),
       "shear": symmetric(o.shear_range)}
  zoom = None if o.zoom_range == (1.0, 1.0) else o.zoom_range
  p["zx"] = _uniform(next(keys), batch, zoom, 1.0)  # independent, as Keras draws 2 values
  p["zy"] = _uniform(next(keys), batch, zoom, 1.0)
  p["flip_horizontal"] = jax.random.bernoulli(next(keys), 0.5, (batch,)) & o.horizontal_flip
  p["flip_vertical"] = jax.random.bernoulli(next(keys), 0.5, (batch,)) & o.vertical_flip
  p["channel_shift_intensity"] = symmetric(o.channel_shift_range)
  p["brightness"] = _uniform(next(keys), batch, o.brightness_range, 1.0)
  p["contrast"] = _uniform(next(keys), batch, o.contrast_range, 1.0)
  p["gamma"] = _uniform(next(keys), batch, o.gamma_range, 1.0)
  # Random erasing (Zhong et al. 2017): area fraction and log-uniform aspect ratio.
  p["erase"] = jax.random.bernoulli(next(keys), o.random_erasing, (batch,))
  k_area, k_aspect, k_top, k_left = jax.random.split(next(keys), 4)
  area = jax.random.uniform(k_area, (batch,), minval=o.erasing_area[0],
                            maxval=o.erasing_area[1]) * height * width
  aspect = jnp.exp(jax.random.uniform(k_aspect, (batch,), minval=math.log(o.erasing_aspect[0]),
                                      maxval=math.log(o.erasing_aspect[1])))
  box_h = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, height)
  box_w = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, width)
  p["erase_height"], p["erase_width"] = box_h, box_w
  p["erase_top"] = jnp.floor(jax.random.uniform(k_top, (batch,)) * (height - box_h + 1))
  p["erase_left"] = jnp.floor(jax.random.uniform(k_left, (batch,)) * (width - box_w + 1))
  return p


# ---------------------------------------------------------------------------- geometry

def affine_matrix(params: dict, height: int, width: int) -> jax.Array:
  """3x3 matrix (one image's params) mapping output (x=col, y=row, 1) to the input point read.

  Keras: M = R(theta) . T(tx, ty) . Shear . Zoom, conjugated by the centre offset; the flips
  (which Keras applies after the affine) compose on the right, about the same centre.
  """
  theta, shear = jnp.deg2rad(params["theta"]), jnp.deg2rad(params["shear"])
  one, zero = jnp.ones_like(theta), jnp.zeros_like(theta)
  mat = lambda rows: jnp.stack([jnp.stack(r) for r in rows]).astype(jnp.float32)
  rotate = mat([[jnp.cos(theta), -jnp.sin(theta), zero], [jnp.sin(theta), jnp.cos(theta), zero],
                [zero, zero, one]])
  shift = mat([[one, zero, params["tx"]], [zero, one, params["ty"]], [zero, zero, one]])
  shear_m = mat([[one, -jnp.sin(shear), zero], [zero, jnp.cos(shear), zero], [zero, zero, one]])
  fx = jnp.where(params.get("flip_horizontal", False), -1.0, 1.0)
  fy = jnp.where(params.get("flip_vertical", False), -1.0, 1.0)
  scale = mat([[params["zx"] * fx, zero, zero], [zero, params["zy"] * fy, zero],
               [zero, zero, one]])
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0  # transform_matrix_offset_center: n/2 - 0.5
  to_centre = jnp.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], jnp.float32)
  from_centre = jnp.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], jnp.float32)
  return to_centre @ rotate @ shift @ shear_m @ scale @ from_centre


def _wrap_coordinate(c, n):
  """scipy's 'wrap' (what Keras gets): period n - 1, first and last samples coincide."""
  if n <= 1:
    return jnp.zeros_like(c)
  period, eps = n - 1, _EDGE_TOLERANCE  # round-off past an edge must not jump to the other
  c = jnp.where(c < -eps, c + period * (jnp.floor(-c / period) + 1), c)
  c = jnp.where(c > n - 1 + eps, c - period * jnp.floor(c / period), c)
  return jnp.clip(c, 0, n - 1)


def _extend_index(i, n, fill_mode):
  if fill_mode == "reflect":  # scipy 'reflect': half-sample symmetric, d c b a | a b c d
    i = jnp.mod(i, 2 * n)
    i = jnp.where(i >= n, 2 * n - 1 - i, i)
  return jnp.clip(i, 0, n - 1)


def resample(image, matrix, fill_mode: str = "nearest", cval: float = 0.0):
  """Bilinear sampling of `image` (H, W, C) float at matrix @ (x, y, 1) for every output pixel,
  as scipy.ndimage.affine_transform(order=1, mode=fill_mode, cval=cval) on each channel."""
  height, width, channels = image.shape
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing="ij")
  x = matrix[0, 0] * cols + matrix[0, 1] * rows + matrix[0, 2]
  y = matrix[1, 0] * cols + matrix[1, 1] * rows + matrix[1, 2]
  if fill_mode == "constant":
    # scipy: a point outside [0, n-1] reads cval (no blending with cval at the edge).
    eps = _EDGE_TOLERANCE
    inside = (x >= -eps) & (x <= width - 1 + eps) & (y >= -eps) & (y <= height - 1 + eps)
    x, y = jnp.clip(x, 0, width - 1), jnp.clip(y, 0, height - 1)
  elif fill_mode == "wrap":
    x, y = _wrap_coordinate(x, width), _wrap_coordinate(y, height)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  xs = [_extend_index(x0 + d, width, fill_mode) for d in (0, 1)]
  ys = [_extend_index(y0 + d, height, fill_mode) for d in (0, 1)]
  flat = image.reshape(height * width, channels)
  get = lambda yy, xx: jnp.take(flat, yy * width + xx, axis=0)
  # lerp form: a zero fraction returns the sample exactly, so integer shifts are bit-exact
  top = get(ys[0], xs[0]) + fx * (get(ys[0], xs[1]) - get(ys[0], xs[0]))
  bottom = get(ys[1], xs[0]) + fx * (get(ys[1], xs[1]) - get(ys[1], xs[0]))
  out = top + fy * (bottom - top)
  if fill_mode == "constant":
    out = jnp.where(inside[..., None], out, jnp.float32(cval))
  return out


# ---------------------------------------------------------------------------- per image

def transform_image(image, params: dict, options: AugmentOptions):
  """One image (H, W, C) float32 and its params (scalars) -> the transformed image, in Keras'
  order (affine incl. flips, channel shift, brightness), then contrast, gamma, erasing, clip.
  Disabled options are skipped at trace time, so they cost nothing."""
  o = options
  height, width, _ = image.shape
  if o.geometric:
    image = resample(image, affine_matrix(params, height, width), o.fill_mode, o.cval)
  if o.channel_shift_range:  # Keras: one shift for all channels, clipped to the image's range
    image = jnp.clip(image + params["channel_shift_intensity"], image.min(), image.max())
  if o.brightness_range is not None:  # PIL ImageEnhance.Brightness: scale towards black
    image = image * params["brightness"]
  if o.contrast_range is not None:  # as keras.layers.RandomContrast: about the channel mean
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = (image - mean) * params["contrast"] + mean
  if o.gamma_range is not None:
    image = 255.0 * (jnp.clip(image, 0.0, 255.0) / 255.0) ** params["gamma"]
  return jnp.clip(image, 0.0, 255.0)


def erase(image, params: dict, noise):
  """Random erasing: the sampled box (when `erase`) is replaced by `noise` (H, W, C) in [0,255]."""
  rows = jnp.arange(image.shape[0])[:, None, None]
  cols = jnp.arange(image.shape[1])[None, :, None]
  box = ((rows >= params["erase_top"]) & (rows < params["erase_top"] + params["erase_height"])
         & (cols >= params["erase_left"]) & (cols < params["erase_left"] + params["erase_width"]))
  return jnp.where(box & params["erase"], noise, image)
