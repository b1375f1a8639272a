"""jaxmed.ops.conv: the fast depthwise path must match lax's grouped conv, values and gradients."""

import jaxmed  # noqa: F401  (XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.ops import conv, depthwise

ATOL = 1e-5


def _data(n, h, w, c, k, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, h, w, c)), dtype)
  kernel = jnp.asarray(rng.normal(size=(k, k, c, 1)), dtype)
  return x, kernel


def _value_and_grads(fn, x, kernel):
  y, vjp = jax.vjp(fn, x, kernel)
  g = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), y.dtype)
  return (y, *vjp(g))


def _compare(x, kernel, strides, padding, monkeypatch, atol=ATOL, k_rtol=1e-5):
  c = x.shape[-1]
  monkeypatch.setenv("JAXMED_CONV_IMPL", "fast")
  fast = jax.jit(lambda x, k: conv.conv2d(x, k, strides, padding, c))
  ref = jax.jit(lambda x, k: conv.conv_reference(x, k, strides, padding, c))
  y, dx, dk = _value_and_grads(fast, x, kernel)
  y_ref, dx_ref, dk_ref = _value_and_grads(ref, x, kernel)
  assert y.shape == y_ref.shape and dx.shape == x.shape and dk.shape == kernel.shape
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), atol=atol, rtol=0)
  np.testing.assert_allclose(np.asarray(dx, np.float32), np.asarray(dx_ref, np.float32), atol=atol, rtol=0)
  scale = float(jnp.max(jnp.abs(dk_ref.astype(jnp.float32))))
  np.testing.assert_allclose(np.asarray(dk, np.float32), np.asarray(dk_ref, np.float32),
                             atol=k_rtol * scale, rtol=0)


PADDINGS = ["SAME", "VALID", ((0, 1), (0, 1)), ((1, 1), (1, 1)), ((2, 0), (1, 3))]


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("hw", [(7, 7), (6, 9)], ids=str)  # odd, even x odd non-square
def test_fast_depthwise_matches_lax(hw, padding, stride, k, monkeypatch):
  x, kernel = _data(2, *hw, 4, k)
  _compare(x, kernel, (stride, stride), padding, monkeypatch)


def test_batch_chunking_matches_lax(monkeypatch):
  # Large batches run as a fori_loop over batch chunks; force 2-image chunks on a small batch.
  monkeypatch.setattr(depthwise, "_chunk_size", lambda x: 2)
  x, kernel = _data(6, 9, 8, 16, 3, seed=2)
  for stride in (1, 2):
    _compare(x, kernel, (stride, stride), ((0, 1), (0, 1)) if stride == 2 else "SAME", monkeypatch)


def test_bfloat16(monkeypatch):
  x, kernel = _data(2, 9, 8, 8, 3, dtype=jnp.bfloat16)
  _compare(x, kernel, (2, 2), "SAME", monkeypatch, atol=0.1, k_rtol=1e-2)


def _count_grouped_convs(fn, *args):
  hlo = jax.jit(lambda *a: fn(*a)).lower(*args).as_text()
  return hlo.count("stablehlo.convolution")


def test_dispatch_and_env_override(monkeypatch):
  # The override is read at trace time, so each check traces a fresh function (jit caches traces).
  x, kernel = _data(1, 8, 8, 4, 3)
  depthwise = lambda x, k: conv.conv2d(x, k, (1, 1), "SAME", 4)
  monkeypatch.delenv("JAXMED_CONV_IMPL", raising=False)
  assert _count_grouped_convs(depthwise, x, kernel) == (0 if jax.default_backend() == "cpu" else 1)
  monkeypatch.setenv("JAXMED_CONV_IMPL", "lax")
  assert _count_grouped_convs(depthwise, x, kernel) == 1
  np.testing.assert_array_equal(depthwise(x, kernel), conv.conv_reference(x, kernel, (1, 1), "SAME", 4))
  monkeypatch.setenv("JAXMED_CONV_IMPL", "fast")
  assert _count_grouped_convs(depthwise, x, kernel) == 0
  monkeypatch.setenv("JAXMED_CONV_IMPL", "bogus")
  with pytest.raises(ValueError):
    depthwise(x, kernel)


@pytest.mark.parametrize("impl", ["auto", "fast"])
def test_dense_conv_routes_to_lax(impl, monkeypatch):
  monkeypatch.setenv("JAXMED_CONV_IMPL", impl)
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  for strides, padding in [((1, 1), "SAME"), ((2, 2), ((0, 1), (0, 1)))]:
    y = conv.conv2d(x, kernel, strides, padding)
    np.testing.assert_array_equal(y, conv.conv_reference(x, kernel, strides, padding))
    assert _count_grouped_convs(lambda x, k: conv.conv2d(x, k, strides, padding), x, kernel) == 1


def _compare_dense(x, kernel, strides, padding, monkeypatch):
  monkeypatch.setenv("JAXMED_CONV_IMPL", "fast")
  fast = jax.jit(lambda x, k: conv.conv2d(x, k, strides, padding))
  ref = jax.jit(lambda x, k: conv.conv_reference(x, k, strides, padding))
  hlo = fast.lower(x, kernel).as_text()
  assert "stablehlo.convolution" not in hlo and "dot_general" in hlo  # really the GEMM path
  y, dx, dk = _value_and_grads(fast, x, kernel)
  y_ref, dx_ref, dk_ref = _value_and_grads(ref, x, kernel)
  assert y.shape == y_ref.shape and dx.shape == x.shape and dk.shape == kernel.shape
  np.testing.assert_allclose(y, y_ref, atol=ATOL, rtol=0)
  np.testing.assert_allclose(dx, dx_ref, atol=ATOL, rtol=0)
  scale = float(jnp.max(jnp.abs(dk_ref)))
  np.testing.assert_allclose(dk, dk_ref, atol=1e-5 * scale, rtol=0)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((0, 0), (0, 0))], ids=str)
@pytest.mark.parametrize("hw", [(8, 8), (7, 9)], ids=str)
def test_pointwise_gemm_matches_lax(hw, padding, stride, monkeypatch):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(3, *hw, 6)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(1, 1, 6, 5)), jnp.float32)
  _compare_dense(x, kernel, (stride, stride), padding, monkeypatch)


def test_dense_convs_that_are_not_1x1_keep_lax(monkeypatch):
  monkeypatch.setenv("JAXMED_CONV_IMPL", "fast")
  x = jnp.ones((1, 8, 8, 4))
  for kernel, padding in ((jnp.ones((3, 3, 4, 2)), "SAME"), (jnp.ones((1, 1, 4, 2)), ((1, 1), (1, 1)))):
    assert _count_grouped_convs(lambda x, k: conv.conv2d(x, k, (1, 1), padding), x, kernel) == 1
