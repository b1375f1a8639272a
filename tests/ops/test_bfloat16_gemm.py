"""bfloat16 dense convolutions as float32-accumulating GEMMs (im2col, Winograd): forward and both
gradients equal lax's convolution of the same bfloat16 values computed exactly in float32, within
the stated rounding; the programs hold no convolution and only bfloat16 x bfloat16 -> float32 dot
products (the form XLA:CPU sends to a matrix unit); conv2d routes to them only when asked.

Tolerances, relative to the reference's largest magnitude: im2col rounds once, at the end, so each
value is within half a bfloat16 ulp (2^-9 of itself, 2^-8 of the maximum with margin); Winograd
also rounds its transformed tiles and kernel to bfloat16 before the products (measured <= 0.0075
of the maximum on these shapes), bounded at 2^-6.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.ops import conv, gemm_conv, winograd
from jaxmed.runtime import matrix_units, settings

BF16 = jnp.bfloat16
IM2COL_TOL, WINOGRAD_TOL = 2.0 ** -8, 2.0 ** -6


def _data(h, w, c, k, kh, seed=0):
  x = jax.random.normal(jax.random.PRNGKey(seed), (2, h, w, c)).astype(BF16)
  kernel = jax.random.normal(jax.random.PRNGKey(seed + 1), (kh, kh, c, k)) / np.sqrt(kh * kh * c)
  return x, kernel.astype(BF16)


def _exact(x, kernel, stride, pads):
  """lax's convolution of the same bfloat16 values, in float32 at full precision."""
  with jax.default_matmul_precision("highest"):
    return conv.conv_reference(x.astype(jnp.float32), kernel.astype(jnp.float32),
                               (stride, stride), pads)


def _value_and_grads(fn, x, kernel, g):
  """fn(x, kernel) and its (dx, dk) for output gradient g, as one compiled program (eager
  dispatch of the 49 taps of a 7x7 costs seconds)."""
  def run(x, kernel, g):
    y, vjp = jax.vjp(fn, x, kernel)
    return (y, *vjp(g.astype(y.dtype)))
  return jax.jit(run)(x, kernel, g)


def _assert_matches_exact(fn, x, kernel, stride, pads, tol):
  """Forward, dx and dk of fn (bfloat16) vs the float32 reference for one output gradient."""
  exact = lambda a, b: _exact(a, b, stride, pads)
  g = jax.random.normal(jax.random.PRNGKey(7), jax.eval_shape(fn, x, kernel).shape)
  with jax.default_matmul_precision("highest"):  # float32 operands: float32 cotangents
    refs = _value_and_grads(exact, x.astype(jnp.float32), kernel.astype(jnp.float32), g)
  outs = _value_and_grads(fn, x, kernel, g)
  for name, out, ref in zip(("forward", "dx", "dk"), outs, refs):
    assert out.dtype == BF16 and out.shape == ref.shape, name
    err = np.max(np.abs(np.asarray(out, np.float32) - np.asarray(ref)))
    assert err <= tol * np.max(np.abs(np.asarray(ref))), (name, err)


CASES = [  # (h, w, C, K, kernel, stride, pads): stem-like, strided, odd shapes, uneven padding
    (9, 8, 5, 6, 3, 2, ((1, 1), (0, 1))),
    (11, 11, 3, 8, 7, 2, ((3, 3), (3, 3))),
    (8, 8, 4, 4, 3, 1, ((0, 0), (2, 1))),
    (10, 9, 4, 5, 5, 3, ((2, 2), (2, 2))),
]


@pytest.mark.parametrize("h, w, c, k, kh, stride, pads", CASES)
def test_im2col_matches_exact_convolution(h, w, c, k, kh, stride, pads):
  x, kernel = _data(h, w, c, k, kh)
  _assert_matches_exact(lambda a, b: gemm_conv.gemm_conv(a, b, stride, pads), x, kernel, stride,
                        pads, IM2COL_TOL)


@pytest.mark.parametrize("pads", [((1, 1), (1, 1)), ((2, 0), (1, 2))])
def test_winograd_bfloat16_matches_exact_convolution(pads):
  x, kernel = _data(9, 7, 16, 24, 3)
  _assert_matches_exact(lambda a, b: winograd.winograd_conv3x3(a, b, pads), x, kernel, 1, pads,
                        WINOGRAD_TOL)


def test_im2col_is_at_least_as_exact_as_lax_bfloat16():
  x, kernel = _data(12, 12, 32, 32, 3)
  exact = np.asarray(_exact(x, kernel, 1, "SAME"))
  pads = ((1, 1), (1, 1))
  ours = np.asarray(gemm_conv.gemm_conv(x, kernel, 1, pads), np.float32)
  theirs = np.asarray(conv.conv_reference(x, kernel, (1, 1), "SAME"), np.float32)
  assert np.max(np.abs(ours - exact)) <= np.max(np.abs(theirs - exact)) + 1e-6


def _dots_and_convs(fn, *args):
  """(dot operand/result types, number of convolutions) in the lowered forward+backward program."""
  loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) ** 2)
  text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).as_text()
  dots = re.findall(r"stablehlo.dot_general.*?: \((tensor<[^>]*>), (tensor<[^>]*>)\) -> "
                    r"(tensor<[^>]*>)", text)
  return [tuple(t.rsplit("x", 1)[1].rstrip(">") for t in d) for d in dots], \
      text.count("stablehlo.convolution")


@pytest.mark.parametrize("name, kh, c, stride", [("im2col 7x7/2", 7, 3, 2),
                                                 ("im2col 3x3/2", 3, 16, 2),
                                                 ("winograd", 3, conv.WINOGRAD_MIN_CHANNELS, 1)])
def test_conv2d_runs_bfloat16_convs_as_float32_accumulating_dots_when_on(name, kh, c, stride):
  x, kernel = _data(8, 8, c, c if name == "winograd" else 8, kh)
  fn = lambda a, b: conv.conv2d(a, b, (stride, stride), "SAME")
  with settings.override(conv_impl="auto", bfloat16="on"):
    dots, convs = _dots_and_convs(fn, x, kernel)
    _assert_matches_exact(fn, x, kernel, stride, "SAME",
                          WINOGRAD_TOL if name == "winograd" else IM2COL_TOL)
  assert convs == 0 and len(dots) >= 3, (name, dots, convs)
  assert all(d == ("bf16", "bf16", "f32") for d in dots), (name, dots)
  with settings.override(conv_impl="auto", bfloat16="off"):
    assert _dots_and_convs(fn, x, kernel)[1] > 0  # off: lax's bfloat16 convolution
  with settings.override(conv_impl="lax", bfloat16="on"):
    assert _dots_and_convs(fn, x, kernel)[1] > 0  # lax forced wins
  x32, k32 = x.astype(jnp.float32), kernel.astype(jnp.float32)
  with settings.override(conv_impl="auto", bfloat16="on"):  # float32 never takes this path
    dots32, _ = _dots_and_convs(fn, x32, k32)
    assert all("bf16" not in d for d in dots32)


def test_auto_dtype_follows_the_probe_and_the_setting(monkeypatch):
  amx = {"model": "Some Xeon", "matrix_flags": ["amx_bf16", "amx_tile"]}
  fast = dict(amx, float32_gflops=300.0, bfloat16_accumulate_float32_gflops=1600.0,
              bfloat16_speedup=5.33, bfloat16_pays=True)
  slow = dict(fast, bfloat16_accumulate_float32_gflops=400.0, bfloat16_speedup=1.33,
              bfloat16_pays=False)
  monkeypatch.setattr(matrix_units, "cpu_description", lambda cpuinfo=None: amx)
  for figures, expected in ((fast, "bfloat16"), (slow, "float32")):
    monkeypatch.setattr(matrix_units, "probe", lambda cache=True, f=figures: f)
    monkeypatch.setattr(matrix_units, "_verdict", {})
    with settings.override(bfloat16="auto"):
      choice = matrix_units.choose_dtype("auto", "cpu")
    assert choice["dtype"] == expected and choice["probe"] is figures, choice
  monkeypatch.setattr(matrix_units, "_verdict", {})
  with settings.override(bfloat16="off"):
    assert matrix_units.choose_dtype("auto", "cpu")["dtype"] == "float32"
  with settings.override(bfloat16="on"):
    assert matrix_units.choose_dtype("auto", "cpu")["dtype"] == "bfloat16"
    assert matrix_units.choose_dtype("auto", "gpu")["dtype"] == "float32"  # 'auto' is CPU-only
    assert matrix_units.choose_dtype("float32", "cpu")["dtype"] == "float32"  # explicit wins
  no_unit = {"model": "Some EPYC", "matrix_flags": ["avx512_bf16"]}
  monkeypatch.setattr(matrix_units, "_verdict", {})
  monkeypatch.setattr(matrix_units, "cpu_description", lambda cpuinfo=None: no_unit)
  monkeypatch.setattr(matrix_units, "probe", lambda cache=True: pytest.fail("probed without AMX"))
  with settings.override(bfloat16="auto"):
    choice = matrix_units.choose_dtype("auto", "cpu")
  assert choice["dtype"] == "float32" and "amx_bf16" in choice["reason"]
