"""jaxmed.augment against Keras' ImageDataGenerator.apply_transform for fixed parameters.

Keras resamples with scipy.ndimage.affine_transform(order=1); jaxmed's single bilinear
resampling with the same matrix and fill mode should agree to float round-off.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmed  # noqa: F401
from jaxmed.augment import make_augmenter, sample_params

os.environ.setdefault("KERAS_BACKEND", "jax")
keras_image = pytest.importorskip("keras.src.legacy.preprocessing.image")
pytest.importorskip("scipy")

CASES = [
    dict(theta=25.0),
    dict(theta=-90.0),
    dict(tx=3.3, ty=-2.2),
    dict(shear=20.0),
    dict(zx=1.3, zy=0.8),
    dict(theta=-40.0, tx=2.0, ty=1.0, shear=10.0, zx=0.9, zy=1.2, flip_horizontal=True),
    dict(theta=30.0, zx=1.5, flip_vertical=True),
]
# every option on, so each transform is traced; the params below decide what happens
ALL_ON = dict(rotation_range=90, width_shift_range=0.2, height_shift_range=0.2, shear_range=30,
              zoom_range=0.5, horizontal_flip=True, vertical_flip=True)


def smooth_image(height, width, seed=0):
  """Smooth content (interpolation-friendly) spanning 0..255, 3 channels."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  channels = [np.sin(rng.uniform(2, 6) * x + rng.uniform(2, 6) * y + rng.uniform(0, 6))
              for _ in range(3)]
  return ((np.stack(channels, -1) + 1) * 127.5).astype(np.float32)


def jaxmed_apply(image, config, **params):
  augment = make_augmenter(config)
  full = sample_params(jnp.zeros(2, jnp.uint32), 1, config, image.shape[:2])
  full = {k: jnp.zeros_like(v) for k, v in full.items()}
  for key in ("zx", "zy", "brightness", "contrast", "gamma"):
    full[key] = jnp.ones((1,))
  for key, value in params.items():
    full[key] = jnp.full((1,), value, full[key].dtype)
  return np.asarray(augment.apply(jnp.asarray(image[None]), full))[0]


@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
def test_affine_matches_keras(fill_mode):
  image = smooth_image(20, 20)
  generator = keras_image.ImageDataGenerator(fill_mode=fill_mode, cval=40.0)
  config = dict(ALL_ON, fill_mode=fill_mode, cval=40.0)
  for params in CASES:
    expected = np.clip(generator.apply_transform(image.copy(), params), 0, 255)
    got = jaxmed_apply(image, config, **params)
    diff = np.abs(got - expected)
    assert diff.mean() < 0.05, (fill_mode, params, diff.mean())
    assert diff[2:-2, 2:-2].max() < 0.05, (fill_mode, params, diff[2:-2, 2:-2].max())


def test_non_square_shift_and_flips_match_keras():
  # Keras centres non-square images on swapped axes; shifts and flips do not depend on the
  # centre, so they must agree exactly here too.
  image = smooth_image(24, 20, seed=1)
  generator = keras_image.ImageDataGenerator(fill_mode="nearest")
  for params in [dict(tx=4.0, ty=-3.0), dict(tx=-2.5, flip_horizontal=True),
                 dict(ty=5.0, flip_vertical=True, flip_horizontal=True)]:
    expected = generator.apply_transform(image.copy(), params)
    got = jaxmed_apply(image, ALL_ON, **params)
    np.testing.assert_allclose(got, expected, atol=1e-3, err_msg=str(params))


def test_brightness_and_channel_shift_match_keras():
  # Keras' brightness goes through a uint8 PIL image, so it rounds to integers: tolerance 1.
  image = np.round(smooth_image(20, 20, seed=2))
  generator = keras_image.ImageDataGenerator()
  config = dict(brightness_range=(0.5, 1.5), channel_shift_range=50.0)
  for params in [dict(brightness=1.3), dict(brightness=0.6),
                 dict(channel_shift_intensity=30.0), dict(channel_shift_intensity=-45.0),
                 dict(channel_shift_intensity=20.0, brightness=1.2)]:
    expected = generator.apply_transform(image.copy(), params)
    got = jaxmed_apply(image, config, **params)
    assert np.abs(got - expected).max() <= 1.0 + 1e-4, params
