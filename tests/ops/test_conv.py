"""jaxmed.ops.conv: the fast depthwise path must match lax's grouped conv, values and gradients."""

import jaxmed  # noqa: F401  (XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.ops import conv, depthwise
from jaxmed.runtime import settings

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


def _compare(x, kernel, strides, padding, atol=ATOL, k_rtol=1e-5):
  c = x.shape[-1]
  fast = jax.jit(lambda x, k: conv.conv2d(x, k, strides, padding, c))
  ref = jax.jit(lambda x, k: conv.conv_reference(x, k, strides, padding, c))
  with settings.override(conv_impl="fast"):
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
def test_fast_depthwise_matches_lax(hw, padding, stride, k):
  x, kernel = _data(2, *hw, 4, k)
  _compare(x, kernel, (stride, stride), padding)


def test_batch_chunking_matches_lax(monkeypatch):
  # Large batches run as a fori_loop over batch chunks; force 2-image chunks on a small batch.
  monkeypatch.setattr(depthwise, "_chunk_size", lambda x: 2)
  x, kernel = _data(6, 9, 8, 16, 3, seed=2)
  for stride in (1, 2):
    _compare(x, kernel, (stride, stride), ((0, 1), (0, 1)) if stride == 2 else "SAME")


def test_bfloat16():
  x, kernel = _data(2, 9, 8, 8, 3, dtype=jnp.bfloat16)
  _compare(x, kernel, (2, 2), "SAME", atol=0.1, k_rtol=1e-2)


def _count_grouped_convs(fn, *args):
  hlo = jax.jit(lambda *a: fn(*a)).lower(*args).as_text()
  return hlo.count("stablehlo.convolution")


def test_dispatch_and_override():
  x, kernel = _data(1, 8, 8, 4, 3)
  depthwise = lambda x, k: conv.conv2d(x, k, (1, 1), "SAME", 4)
  with settings.override(conv_impl="auto"):
    assert _count_grouped_convs(depthwise, x, kernel) == (0 if jax.default_backend() == "cpu" else 1)
  with settings.override(conv_impl="lax"):
    assert _count_grouped_convs(depthwise, x, kernel) == 1
    want = conv.conv_reference(x, kernel, (1, 1), "SAME", 4)
    np.testing.assert_array_equal(depthwise(x, kernel), want)
  with settings.override(conv_impl="fast"):
    assert _count_grouped_convs(depthwise, x, kernel) == 0
  with pytest.raises(ValueError, match="JAXMED_CONV_IMPL='bogus'.*auto, lax, fast"):
    with settings.override(conv_impl="bogus"):
      pass


def test_one_jitted_function_follows_the_override():
  # The switch is read while tracing: override clears jit's caches so the same jitted function
  # is traced again under the new value instead of replaying the old kernels.
  x, kernel = _data(1, 8, 8, 4, 3)
  f = jax.jit(lambda x, k: conv.conv2d(x, k, (1, 1), "SAME", 4))
  with settings.override(conv_impl="lax"):
    assert f.lower(x, kernel).as_text().count("stablehlo.convolution") == 1
    f(x, kernel)
  with settings.override(conv_impl="fast"):
    assert f.lower(x, kernel).as_text().count("stablehlo.convolution") == 0
    np.testing.assert_allclose(f(x, kernel), conv.conv_reference(x, kernel, (1, 1), "SAME", 4),
                               atol=ATOL)


@pytest.mark.parametrize("impl", ["auto", "fast"])
def test_dense_conv_routes_to_lax(impl):
  with settings.override(conv_impl=impl):
    _check_dense_conv_routes_to_lax()


def _check_dense_conv_routes_to_lax():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  for strides, padding in [((1, 1), "SAME"), ((2, 2), ((0, 1), (0, 1)))]:
    y = conv.conv2d(x, kernel, strides, padding)
    np.testing.assert_array_equal(y, conv.conv_reference(x, kernel, strides, padding))
    assert _count_grouped_convs(lambda x, k: conv.conv2d(x, k, strides, padding), x, kernel) == 1


def _compare_dense(x, kernel, strides, padding):
  # Full float32 products: on GPUs the default precision (TF32) alone differs by ~1e-3.
  with jax.default_matmul_precision("highest"), settings.override(conv_impl="fast"):
    _compare_dense_at_current_precision(x, kernel, strides, padding)


def _compare_dense_at_current_precision(x, kernel, strides, padding):
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
def test_pointwise_gemm_matches_lax(hw, padding, stride):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(3, *hw, 6)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(1, 1, 6, 5)), jnp.float32)
  _compare_dense(x, kernel, (stride, stride), padding)


def test_dense_convs_that_are_not_1x1_keep_lax():
  x = jnp.ones((1, 8, 8, 4))
  cases = ((jnp.ones((3, 3, 4, 2)), "SAME"), (jnp.ones((1, 1, 4, 2)), ((1, 1), (1, 1))))
  with settings.override(conv_impl="fast"):
    for kernel, padding in cases:
      assert _count_grouped_convs(lambda x, k: conv.conv2d(x, k, (1, 1), padding), x, kernel) == 1


def _imports(module: str) -> set[str]:
  """The jaxmed.ops modules `module` imports, at any depth of its code (function bodies too)."""
  import ast
  import importlib.util
  tree = ast.parse(open(importlib.util.find_spec(module).origin).read())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == "jaxmed.ops":
      found |= {f"jaxmed.ops.{a.name}" for a in node.names}
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxmed.ops."):
      found.add(node.module)
    elif isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("jaxmed.ops.")}
  return found


def test_ops_imports_form_a_dag():
  import pkgutil
  import jaxmed.ops
  modules = [f"jaxmed.ops.{m.name}" for m in pkgutil.iter_modules(jaxmed.ops.__path__)]
  edges = {m: _imports(m) for m in modules}
  done, active = set(), []

  def visit(m):
    assert m not in active, f"import cycle: {' -> '.join(active[active.index(m):] + [m])}"
    if m not in done:
      active.append(m)
      for n in edges.get(m, ()):
        visit(n)
      active.pop()
      done.add(m)

  for m in modules:
    visit(m)


def test_pointwise_bfloat16_accumulates_in_float32():
  """bfloat16 1x1 convs: all three products (forward, dx, dk) declare a float32 result, the form
  XLA:CPU sends to AMX (the HLO check fails on the earlier code, whose forward and dx products
  returned bfloat16), and each output is rounded once: within half a bfloat16 ulp of the exact
  sum."""
  import re
  from jaxmed.ops import pointwise
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 64)), jnp.bfloat16)
  kernel = jnp.asarray(rng.normal(size=(1, 1, 64, 32)) / 8, jnp.bfloat16)
  y = pointwise.pointwise_conv(x, kernel)
  assert y.dtype == jnp.bfloat16
  exact = np.einsum("nhwc,cd->nhwd", np.asarray(x, np.float64), np.asarray(kernel[0, 0], np.float64))
  assert np.all(np.abs(np.asarray(y, np.float64) - exact) <= 2.0 ** -8 * np.abs(exact) + 1e-30)
  loss = lambda x, k: jnp.sum(pointwise.pointwise_conv(x, k).astype(jnp.float32) ** 2)
  dx, dk = jax.grad(loss, (0, 1))(x, kernel)
  assert dx.dtype == jnp.bfloat16 and dk.dtype == jnp.bfloat16
  hlo = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(x, kernel).as_text()
  products = re.findall(r"stablehlo.dot_general.*?-> tensor<[0-9x]+x(\w+)>", hlo)
  assert len(products) == 3 and set(products) == {"f32"}, products  # forward, dx, dk
