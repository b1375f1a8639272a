"""3x3 stride-1 convolution as Winograd F(2x2, 3x3): 16 matrix products in place of 36.

Each 2x2 output tile needs a 4x4 input tile; transformed into the Winograd domain
(V = B^T d B, U = G g G^T), the convolution becomes 16 independent (pixels, C) x (C, K) products,
and the tile comes back as Y = A^T (U . V) A (Lavin & Gray 2015). That is 2.25x fewer
multiply-adds than the direct convolution; the transforms are additions over the input and output,
cheap where C and K are large and the image is small (ResNet's later stages), costly where they
are not, so conv2d uses this path only where it measured faster (conv.WINOGRAD_MIN_CHANNELS).

The transforms use only 0, +-1 and +-1/2: in float32 the result differs from lax's by about
1e-6 of the output's largest magnitude (ResNet's shapes, He-scaled weights); tests/test_winograd.py
bounds it at 1e-5. The float32 gradient is lax's: the custom VJP differentiates the direct
convolution, which is linear in each operand, so XLA drops its forward pass and keeps only the two
transposed convolutions.

bfloat16 (for a CPU with a matrix unit, issue #21): the transforms run in float32, only the 16
products take bfloat16 operands, accumulating in float32, and the output rounds once. Both
gradients are products too, since XLA:CPU's bfloat16 convolutions do not reach the matrix unit:
dx is this same Winograd convolution of the output gradient with the kernel turned 180 degrees
and its in/out channels swapped (padding 2 - p on each side), dk one im2col product
(ops/gemm_conv.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmed.ops import gemm_conv
from jaxmed.ops.base import conv_reference

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _combine(coefficients, terms):
  """sum_i coefficients[i] * terms[i], written with adds and subtracts where the weight is +-1."""
  out = None
  for c, t in zip(coefficients, terms):
    if c == 0:
      continue
    term = t if c == 1 else (-t if c == -1 else t * jnp.asarray(c, t.dtype))
    out = term if out is None else out + term
  return out


def transform_kernel(kernel):
  """(3, 3, C, K) -> (16, C, K): U = G g G^T for every (c, k), flattened over the 4x4 tile."""
  rows = [_combine(_G[i], [kernel[a] for a in range(3)]) for i in range(4)]  # (3, C, K) each
  return jnp.stack([_combine(_G[j], [r[b] for b in range(3)]) for r in rows for j in range(4)])


def output_size(size: int, pad: tuple[int, int]) -> int:
  return size + pad[0] + pad[1] - 2


def _winograd(x, kernel, padding):
  dtype = jnp.result_type(x, kernel)
  if dtype != jnp.float32:  # transforms in float32, products in `dtype` accumulating in float32
    return _winograd_products_in(dtype, x.astype(jnp.float32), kernel.astype(jnp.float32), padding)
  return _winograd_products_in(None, x, kernel, padding)


def _winograd_products_in(dtype, x, kernel, padding):
  n, h, w, c = x.shape
  (pt, pb), (pl, pr) = padding
  ho, wo = output_size(h, (pt, pb)), output_size(w, (pl, pr))
  th, tw = -(-ho // 2), -(-wo // 2)  # output tiles; the last may hang over and is cropped
  # Zero rows/columns past the requested padding only feed the cropped outputs.
  x = jnp.pad(x, ((0, 0), (pt, 2 * th + 2 - h - pt), (pl, 2 * tw + 2 - w - pl), (0, 0)))
  # d[a][b] = the (a, b) element of every 4x4 input tile, as an (N, th, tw, C) array.
  d = [[x[:, a:a + 2 * th:2, b:b + 2 * tw:2, :] for b in range(4)] for a in range(4)]
  rows = [[_combine(_BT[i], [d[a][b] for a in range(4)]) for b in range(4)] for i in range(4)]
  v = jnp.stack([_combine(_BT[j], rows[i]) for i in range(4) for j in range(4)])
  v = v.reshape(16, n * th * tw, c)
  u = transform_kernel(kernel)
  if dtype is None:
    m = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))
  else:
    m = lax.dot_general(v.astype(dtype), u.astype(dtype), (((2,), (1,)), ((0,), (0,))),
                        preferred_element_type=jnp.float32)
  m = m.reshape(4, 4, n, th, tw, -1)
  cols = [[_combine(_AT[r], [m[i, j] for i in range(4)]) for j in range(4)] for r in range(2)]
  y = jnp.stack([jnp.stack([_combine(_AT[s], cols[r]) for s in range(2)], axis=3)
                 for r in range(2)], axis=2)  # (N, th, 2, tw, 2, K)
  y = y.reshape(n, 2 * th, 2 * tw, -1)[:, :ho, :wo, :]
  return y if dtype is None else y.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def winograd_conv3x3(x, kernel, padding):
  """NHWC x, (3, 3, C, K) kernel, stride 1, explicit ((top, bottom), (left, right)) padding."""
  return _winograd(x, kernel, padding)


def _fwd(x, kernel, padding):
  return _winograd(x, kernel, padding), (x, kernel)


def _bwd(padding, res, g):
  x, kernel = res
  if jnp.result_type(x, kernel) == jnp.float32:
    _, vjp = jax.vjp(lambda x, k: conv_reference(x, k, (1, 1), padding), x, kernel)
    return vjp(g)
  (pt, pb), (pl, pr) = padding
  turned = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # (3, 3, K, C)
  dx = _winograd(g.astype(x.dtype), turned, ((2 - pt, 2 - pb), (2 - pl, 2 - pr)))
  dk = gemm_conv.kernel_gradient(x, g, (3, 3), 1, padding, kernel.dtype)
  return dx.astype(x.dtype), dk


winograd_conv3x3.defvjp(_fwd, _bwd)
