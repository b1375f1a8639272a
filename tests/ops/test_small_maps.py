"""Dense convolutions with outputs of at most 2x2 run on a CPU as one im2col product
(ops/conv.py SMALL_MAP; XLA:CPU's own kernels took up to 24x as long on such shapes): equal to
lax forward and in both gradients, taken only where the output is that small, and never with
lax forced or in bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.ops import conv
from jaxmed.runtime import settings

CASES = [  # (h, w, C, K, kernel, stride, padding): output at most 2x2
    (2, 2, 16, 8, 3, 1, "SAME"),                # ResNet50V2's last stage at 64 px, narrowed
    (4, 4, 8, 8, 3, 2, ((1, 1), (1, 1))),       # the stride-2 conv into it
    (1, 1, 8, 4, 3, 1, "SAME"),                 # one pixel: only the centre tap reads data
    (5, 5, 4, 6, 3, 2, ((0, 1), (0, 1))),       # uneven padding
    (3, 4, 4, 4, 3, 1, "VALID"),                # 1x2, not square
    (4, 4, 3, 8, 7, 2, "SAME"),                 # a 7x7 stem on a tiny input
]


def _data(h, w, c, k, kh):
  rng = np.random.default_rng(h * 100 + w * 10 + kh)
  x = jnp.asarray(rng.normal(size=(3, h, w, c)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(kh, kh, c, k)) / np.sqrt(kh * kh * c), jnp.float32)
  return x, kernel


def _convolutions(fn, *args) -> int:
  """Convolutions in the lowered forward+backward program of sum(fn(*args)^2)."""
  loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) ** 2)
  return jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).as_text().count(
      "stablehlo.convolution")


@pytest.mark.parametrize("h, w, c, k, kh, stride, padding", CASES)
def test_small_outputs_run_as_im2col_and_equal_lax(h, w, c, k, kh, stride, padding):
  x, kernel = _data(h, w, c, k, kh)
  ours = lambda a, b: conv.conv2d(a, b, (stride, stride), padding)
  theirs = lambda a, b: conv.conv_reference(a, b, (stride, stride), padding)
  with settings.override(conv_impl="auto"):
    assert _convolutions(ours, x, kernel) == 0
    y = jax.jit(ours)(x, kernel)
    grads = jax.grad(lambda a, b: jnp.sum(jnp.sin(ours(a, b))), argnums=(0, 1))(x, kernel)
  assert max(y.shape[1:3]) <= conv.SMALL_MAP
  np.testing.assert_allclose(y, theirs(x, kernel), rtol=1e-5, atol=1e-5)
  expected = jax.grad(lambda a, b: jnp.sum(jnp.sin(theirs(a, b))), argnums=(0, 1))(x, kernel)
  for g, e, name in zip(grads, expected, ("dx", "dk")):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=name)


def test_larger_outputs_lax_forced_and_bfloat16_keep_lax():
  x, kernel = _data(3, 3, 8, 8, 3)  # a 3x3 output: lax won some of these shapes
  same = lambda a, b: conv.conv2d(a, b, (1, 1), "SAME")
  with settings.override(conv_impl="auto"):
    assert _convolutions(same, x, kernel) > 0
  x, kernel = _data(2, 2, 8, 8, 3)
  with settings.override(conv_impl="lax"):
    assert _convolutions(same, x, kernel) > 0
  with settings.override(conv_impl="auto", bfloat16="off"):  # bfloat16 was not measured here
    assert _convolutions(same, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)) > 0
