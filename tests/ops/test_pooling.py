"""jaxmed's max pooling (shifted strided slices) equals Flax's reduce-window max pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.ops.pooling import max_pool


def distinct_values(shape, seed=0):
  """A permutation of distinct floats: no ties, so both gradients pick the same tap."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32) / 100 - 50)


@pytest.mark.parametrize("window, strides, padding, hw", [
    ((3, 3), (2, 2), "VALID", (17, 17)),           # ResNet's stem after ZeroPadding2D
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (16, 16)),  # torchvision's stem (-inf padding)
    ((3, 3), (2, 2), "SAME", (15, 16)),            # Xception, odd and even sizes
    ((2, 2), (2, 2), "VALID", (14, 14)),           # VGG, LeNet
    ((3, 3), (1, 1), "SAME", (9, 11)),
    ((2, 3), (1, 2), "VALID", (9, 10)),
])
def test_values_and_gradients_equal_flax_max_pool(window, strides, padding, hw):
  x = distinct_values((2, *hw, 5))
  ours = lambda x: max_pool(x, window, strides, padding)
  ref = lambda x: nn.max_pool(x, window, strides, padding)
  np.testing.assert_array_equal(ours(x), ref(x))
  w = jnp.asarray(np.random.default_rng(1).standard_normal(ref(x).shape).astype(np.float32))
  g_ours = jax.grad(lambda x: jnp.sum(ours(x) * w))(x)
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) * w))(x)
  np.testing.assert_allclose(g_ours, g_ref, atol=1e-6)
  assert float(jnp.abs(g_ref).sum()) > 0  # the comparison is not between two zero tensors


def test_under_jit_with_resnet_stem_shape():
  x = distinct_values((2, 34, 34, 8), seed=3)
  f = jax.jit(lambda x: max_pool(x, (3, 3), (2, 2), "VALID"))
  np.testing.assert_array_equal(f(x), nn.max_pool(x, (3, 3), (2, 2), "VALID"))


def test_ties_send_the_gradient_to_the_first_tap_as_reduce_window_does():
  x = jnp.zeros((1, 7, 7, 2)).at[0, 2, 2, 0].set(-1.0)  # windows of equal maxima
  for window, strides, padding in (((3, 3), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME")):
    ours = jax.grad(lambda x: max_pool(x, window, strides, padding).sum())(x)
    ref = jax.grad(lambda x: nn.max_pool(x, window, strides, padding).sum())(x)
    np.testing.assert_array_equal(ours, ref)


def test_conv_impl_setting_picks_the_kernel():
  from jaxmed.runtime import settings
  x = distinct_values((1, 9, 9, 2))
  hlo = lambda: jax.jit(lambda x: max_pool(x, (3, 3), (2, 2), "SAME")).lower(x).as_text()
  with settings.override(conv_impl="lax"):
    assert "reduce_window" in hlo()
  with settings.override(conv_impl="fast"):
    assert "reduce_window" not in hlo()
