"""jaxmed.ops.winograd: Winograd F(2x2, 3x3) must equal lax's convolution, values and gradients,
and conv2d must send exactly the wide float32 3x3 stride-1 convs there on the CPU."""

import jaxmed  # noqa: F401  (XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.ops import conv, winograd
from jaxmed.runtime import settings

PADDINGS = [((1, 1), (1, 1)), ((0, 0), (0, 0)), ((2, 0), (1, 3)), ((0, 1), (1, 0))]


def _data(n, h, w, c, k, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, h, w, c)), jnp.float32)
  # He-scaled weights, as in a network: outputs of order 1, so 1e-5 means 1e-5 of the signal.
  kernel = jnp.asarray(rng.normal(size=(3, 3, c, k)) / np.sqrt(9 * c), jnp.float32)
  return x, kernel


def _value_and_grads(fn, x, kernel):
  y, vjp = jax.vjp(fn, x, kernel)
  g = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), y.dtype)
  return (y, *vjp(g))


def _assert_close(got, want, rtol=1e-5):
  """Within rtol of the reference's largest magnitude, element by element."""
  assert got.shape == want.shape
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=rtol * scale, rtol=0)


@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (3, 4)], ids=str)  # even, odd x odd, tiny
def test_winograd_matches_lax(hw, padding):
  x, kernel = _data(2, *hw, 16, 24)
  with jax.default_matmul_precision("highest"):
    fast = jax.jit(lambda x, k: winograd.winograd_conv3x3(x, k, padding))
    ref = jax.jit(lambda x, k: conv.conv_reference(x, k, (1, 1), padding))
    for got, want in zip(_value_and_grads(fast, x, kernel), _value_and_grads(ref, x, kernel)):
      _assert_close(got, want)


def test_winograd_error_stays_small_for_wide_convs():
  # ResNet's widths: the 16 products each sum over C = 256 inputs.
  x, kernel = _data(2, 14, 14, 256, 256, seed=4)
  with jax.default_matmul_precision("highest"):
    got = jax.jit(lambda x, k: winograd.winograd_conv3x3(x, k, ((1, 1), (1, 1))))(x, kernel)
    want = conv.conv_reference(x, kernel, (1, 1), "SAME")
  _assert_close(got, want)


def test_kernel_transform_by_hand():
  # U = G g G^T with G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]], for a single channel pair.
  g = np.arange(9, dtype=np.float32).reshape(3, 3)
  G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
  u = winograd.transform_kernel(jnp.asarray(g)[:, :, None, None])
  np.testing.assert_allclose(np.asarray(u)[:, 0, 0].reshape(4, 4), G @ g @ G.T, rtol=1e-6)


def _has_convolution(fn, *args):
  return "stablehlo.convolution" in jax.jit(fn).lower(*args).as_text()


def test_conv2d_routes_wide_3x3_stride1_to_winograd():
  with settings.override(conv_impl="fast"):
    _check_routing()
  with settings.override(conv_impl="lax"):
    wide = _data(1, 6, 5, conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_MIN_CHANNELS)
    assert _has_convolution(lambda x, k: conv.conv2d(x, k, (1, 1), "SAME"), *wide)


def _check_routing():
  wide = _data(1, 6, 5, conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_MIN_CHANNELS)
  narrow = _data(1, 6, 5, conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_MIN_CHANNELS - 1)
  for padding in ("SAME", "VALID", ((1, 1), (1, 1))):
    same = lambda x, k, p=padding: conv.conv2d(x, k, (1, 1), p)
    assert not _has_convolution(same, *wide)
    with jax.default_matmul_precision("highest"):
      _assert_close(same(*wide), conv.conv_reference(*wide, (1, 1), padding))
    assert _has_convolution(same, *narrow)  # too narrow: lax
  negative = lambda x, k: conv.conv2d(x, k, (1, 1), ((-1, 1), (1, 1)))
  assert _has_convolution(negative, *wide)  # cropping pads: lax
  strided = lambda x, k: conv.conv2d(x, k, (2, 2), "SAME")
  assert _has_convolution(strided, *wide)  # stride 2: lax
  x, k = wide
  bf16 = lambda x, k: conv.conv2d(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16), (1, 1), "SAME")
  with settings.override(bfloat16="off"):
    assert _has_convolution(bf16, x, k)  # bfloat16 without a matrix unit: lax
