"""jaxmed.augment: geometry conventions, fill modes, sampling ranges, seeding, mixup/cutmix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmed  # noqa: F401
from jaxmed.augment import (Augmenter, PRESETS, affine_matrix, make_augmenter, mix_batch,
                            normalize, resample, resolve, sample_params)

IDENTITY = dict(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, flip_horizontal=False,
                flip_vertical=False)


def params_for(batch=1, **overrides):
  """Identity params for every key sample_params returns, with `overrides`, shape (batch,)."""
  p = sample_params(jax.random.PRNGKey(0), batch, {}, (8, 8))
  p = {k: jnp.zeros_like(v) if v.dtype == bool else jnp.ones_like(v) * 0 for k, v in p.items()}
  for key in ("zx", "zy", "brightness", "contrast", "gamma"):
    p[key] = jnp.ones((batch,))
  for key, value in overrides.items():
    p[key] = jnp.full((batch,), value, p[key].dtype)
  return p


def warp(image, fill_mode="constant", cval=0.0, **params):
  full = {k: jnp.asarray(v) for k, v in {**IDENTITY, **params}.items()}
  matrix = affine_matrix(full, image.shape[0], image.shape[1])
  return np.asarray(resample(jnp.asarray(image, jnp.float32), matrix, fill_mode, cval))


def point_image(height, width, row, col):
  image = np.zeros((height, width, 1), np.float32)
  image[row, col] = 255.0
  return image


def landing(image):
  assert image.max() == pytest.approx(255.0, abs=1e-3), "the point was interpolated"
  return tuple(int(i) for i in np.argwhere(image[..., 0] > 254.0)[0])


@pytest.mark.parametrize("params, expected", [
    # 21x21, centre (10, 10); (row, col) = (4, 12). Output (x, y) reads centre + M (x, y) - centre.
    (dict(theta=90.0), (8, 4)),        # input offset (dy, dx) = (-6, 2) lands at (-2, -6)
    (dict(theta=180.0), (16, 8)),      # point reflection through the centre
    (dict(tx=3.0, ty=-2.0), (6, 9)),   # output = input - (ty, tx)
    (dict(zx=0.5, zy=0.5), (-2, 14)),  # zoom < 1 magnifies: offsets double -> row -2 is outside
    (dict(zx=0.5, zy=1.0), (4, 14)),
])
def test_known_point_lands_where_the_matrix_says(params, expected):
  image = point_image(21, 21, 4, 12)
  full = {k: jnp.asarray(v) for k, v in {**IDENTITY, **params}.items()}
  predicted = np.linalg.inv(np.asarray(affine_matrix(full, 21, 21))) @ np.array([12.0, 4.0, 1.0])
  assert (round(predicted[1]), round(predicted[0])) == expected
  out = warp(image, **params)
  if 0 <= expected[0] < 21 and 0 <= expected[1] < 21:
    assert landing(out) == expected
  else:
    assert out.max() == 0.0


def test_non_square_rotates_about_the_true_centre():
  image = point_image(24, 20, 3, 5)
  assert landing(warp(image, theta=180.0)) == (24 - 1 - 3, 20 - 1 - 5)
  assert landing(warp(image, tx=-4.0, ty=2.0)) == (3 - 2, 5 + 4)  # tx moves along the width


@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
def test_identity_params_are_bit_exact(fill_mode):
  image = np.random.default_rng(0).integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
  augment = make_augmenter(dict(rotation_range=30, zoom_range=0.2, fill_mode=fill_mode,
                                brightness_range=(0.5, 1.5), channel_shift_range=20))
  out = augment.apply(jnp.asarray(image), params_for(2))
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out), image.astype(np.float32))


def test_flips_are_exact():
  image = jnp.asarray(np.random.default_rng(1).integers(0, 256, (1, 24, 20, 3), dtype=np.uint8))
  augment = make_augmenter(dict(horizontal_flip=True, vertical_flip=True))
  as_float = image.astype(jnp.float32)
  for flags, axes in [(dict(flip_horizontal=True), (2,)), (dict(flip_vertical=True), (1,)),
                      (dict(flip_horizontal=True, flip_vertical=True), (1, 2))]:
    out = augment.apply(image, params_for(1, **flags))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.flip(as_float, axes)))


@pytest.mark.parametrize("shift, fill_mode, expected", [
    # one row 1..6; output column j reads input column j + tx
    (2.0, "nearest", [3, 4, 5, 6, 6, 6]),
    (2.0, "constant", [3, 4, 5, 6, -1, -1]),
    (2.0, "reflect", [3, 4, 5, 6, 6, 5]),     # half-sample symmetric: ... 5 6 | 6 5 4 ...
    (2.0, "wrap", [3, 4, 5, 6, 2, 3]),        # scipy/Keras wrap: period n - 1 (6 and 1 coincide)
    (-2.0, "nearest", [1, 1, 1, 2, 3, 4]),
    (-2.0, "constant", [-1, -1, 1, 2, 3, 4]),
    (-2.0, "reflect", [2, 1, 1, 2, 3, 4]),
    (-2.0, "wrap", [4, 5, 1, 2, 3, 4]),
    (0.5, "constant", [1.5, 2.5, 3.5, 4.5, 5.5, -1]),  # past the last sample -> cval, no blend
])
def test_fill_modes_on_a_shifted_image(shift, fill_mode, expected):
  image = np.tile(np.arange(1, 7, dtype=np.float32)[None, :, None], (3, 1, 1))
  out = warp(image, fill_mode=fill_mode, cval=-1.0, tx=shift)
  np.testing.assert_allclose(out[:, :, 0], np.tile(expected, (3, 1)), atol=1e-5)


def test_sampled_parameters_stay_in_range():
  config = dict(rotation_range=20, width_shift_range=0.1, height_shift_range=3.0, shear_range=8,
                zoom_range=0.2, horizontal_flip=True, brightness_range=(0.7, 1.1),
                channel_shift_range=15, contrast_range=(0.8, 1.3), gamma_range=(0.5, 2.0))
  n = 4000
  p = jax.tree.map(np.asarray, sample_params(jax.random.PRNGKey(3), n, config, (24, 20)))
  for key, lo, hi in [("theta", -20, 20), ("tx", -2.0, 2.0), ("ty", -3, 3), ("shear", -8, 8),
                      ("zx", 0.8, 1.2), ("zy", 0.8, 1.2), ("brightness", 0.7, 1.1),
                      ("channel_shift_intensity", -15, 15), ("contrast", 0.8, 1.3),
                      ("gamma", 0.5, 2.0)]:
    values = p[key]
    assert values.shape == (n,)
    assert lo <= values.min() < lo + 0.02 * (hi - lo), key
    assert hi - 0.02 * (hi - lo) < values.max() <= hi, key
  assert not np.allclose(p["zx"], p["zy"])  # drawn independently, as Keras does
  assert 0.45 < p["flip_horizontal"].mean() < 0.55
  assert not p["flip_vertical"].any()  # disabled
  # Keras: an int shift is a choice from range(n) with a random sign, in pixels
  q = sample_params(jax.random.PRNGKey(4), 2000, dict(width_shift_range=3), (24, 20))
  assert set(np.unique(np.asarray(q["tx"])).tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}


def test_erasing_box_matches_its_parameters():
  augment = make_augmenter(dict(random_erasing=1.0, erasing_area=(0.1, 0.3)))
  images = jnp.full((64, 24, 20, 3), 100.0)
  params = augment.sample(jax.random.PRNGKey(0), 64, (24, 20))
  out = np.asarray(augment.apply(images, params, noise=jnp.full(images.shape, -1.0)))
  erased = (out[..., 0] == -1.0).sum(axis=(1, 2))
  np.testing.assert_array_equal(erased, np.asarray(params["erase_height"] * params["erase_width"]))
  assert ((erased / (24 * 20) > 0.07) & (erased / (24 * 20) < 0.35)).all()


def test_seeding_and_per_example_parameters():
  augment = make_augmenter(PRESETS["mri"] | dict(random_erasing=0.5))
  image = np.random.default_rng(2).integers(0, 256, (24, 20, 3), dtype=np.uint8)
  images = jnp.asarray(np.repeat(image[None], 6, axis=0))
  labels = jax.nn.one_hot(jnp.arange(6) % 3, 3)
  run = jax.jit(augment)
  a, la = run(jax.random.PRNGKey(0), images, labels)
  b, _ = run(jax.random.PRNGKey(0), images, labels)
  c, _ = run(jax.random.PRNGKey(1), images, labels)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(c)).mean() > 1.0
  a = np.asarray(a)
  assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 255.0
  assert all(np.abs(a[i] - a[j]).mean() > 1.0 for i in range(6) for j in range(i))
  np.testing.assert_array_equal(np.asarray(la), np.asarray(labels))  # no mixing: unchanged


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixing_labels_match_pixels(mixup, cutmix):
  # image i is constant 10 * i with class i, so every pixel reveals its mixing weights
  batch, num_classes = 16, 16
  images = jnp.broadcast_to(10.0 * jnp.arange(batch)[:, None, None, None], (batch, 12, 10, 3))
  labels = jax.nn.one_hot(jnp.arange(batch), num_classes)
  out, soft = mix_batch(jax.random.PRNGKey(5), images, labels, mixup, cutmix)
  out, soft = np.asarray(out), np.asarray(soft)
  np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
  assert (soft >= 0).all() and (np.count_nonzero(soft > 1e-6, axis=1) <= 2).all()
  assert (soft.max(axis=1) < 1 - 1e-3).sum() >= batch // 2  # most examples actually mixed
  # each pixel's value is a convex mix of 10*own and 10*partner; its mean is the label mix
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), soft @ (10.0 * np.arange(num_classes)),
                             rtol=1e-5, atol=1e-3)
  if not mixup:  # CutMix: the label weight of the example itself = fraction of its own pixels
    own = (out[..., 0] == 10.0 * np.arange(batch)[:, None, None]).mean(axis=(1, 2))
    np.testing.assert_allclose(own, soft[np.arange(batch), np.arange(batch)], atol=1e-6)


def test_config_handling():
  assert make_augmenter(None) is None
  assert make_augmenter({}) is None
  assert make_augmenter(dict(preset="none", rotation_range=0.0)) is None
  assert isinstance(make_augmenter(dict(preset="xray")), Augmenter)
  merged = resolve(dict(preset="mri", rotation_range=3.0, horizontal_flip=False))
  assert merged["rotation_range"] == 3.0 and merged["horizontal_flip"] is False
  assert merged["zoom_range"] == PRESETS["mri"]["zoom_range"]
  assert normalize(dict(zoom_range=0.25)).zoom_range == (0.75, 1.25)
  assert normalize(dict(zoom_range=[0.9, 1.3])).zoom_range == (0.9, 1.3)
  with pytest.raises(ValueError, match="unknown augment option"):
    normalize(dict(rotaton_range=10))
  with pytest.raises(ValueError, match="preset"):
    normalize(dict(preset="ct"))
  assert normalize(dict(interpolation_order=1, data_format="channels_last", rescale=None,
                       horizontal_flip=1)).horizontal_flip is True
  with pytest.raises(ValueError, match="rescale"):
    normalize(dict(rescale=1 / 255))
  with pytest.raises(ValueError, match="fill_mode"):
    normalize(dict(fill_mode="mirror"))
  import ml_collections
  config = ml_collections.ConfigDict(dict(preset="mri", vertical_flip=True))
  assert make_augmenter(config).options.vertical_flip
