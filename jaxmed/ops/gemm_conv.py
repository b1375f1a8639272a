"""Dense bfloat16 convolutions as one float32-accumulating matrix product over image patches.

A CPU matrix unit (Intel AMX) multiplies bfloat16 matrices several times faster than float32, but
XLA:CPU sends only dot products to it, not convolutions (issue #21, measured on a Xeon with AMX:
jax's bfloat16 `x @ y` with float32 accumulation at 5.4x float32, `lax.conv_general_dilated` in
bfloat16 at 0.8x). So for bfloat16 models on such a CPU every dense convolution that is neither a
1x1 (ops/pointwise.py) nor a wide 3x3 stride-1 (ops/winograd.py) runs here as im2col: the kh*kw
shifted windows of the padded input side by side on the channel axis, (N, Ho, Wo, kh*kw*C), times
the kernel as a (kh*kw*C, K) matrix. Its gradients are two more products: dk = patches^T g, and
dx, at stride 1 the same im2col product on g with the kernel turned 180 degrees, else g k^T per
tap folded back onto the input (each tap's slice placed with lax.pad's interior padding at its
stride, summed). All accumulate in float32 and round once, so the result is at least as exact as
lax's bfloat16 convolution. In float32 this form loses to XLA's own convolutions on a CPU
without a matrix unit (AMD EPYC, jax 0.10.2, batch 32 forward+backward: 0.3-0.6x lax on
DenseNet121's and ResNet50V2's 3x3 shapes), so float32 takes it only where XLA:CPU's
kernels are far slower: outputs of at most 2x2 (ops/conv.py SMALL_MAP).

The patches cost kh*kw times the input's memory (ResNet50V2 at 224 px, batch 32: about 120 MB for
its largest layer); the choice of when this runs is conv2d's (ops/conv.py).
"""

import jax
import jax.numpy as jnp
from jax import lax

F32 = jnp.float32


def output_size(size: int, k: int, stride: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - k) // stride + 1


def patches(x, kernel_hw, stride: int, pads):
  """(N, H, W, C) -> (N, Ho, Wo, kh*kw*C): tap (a, b) in channels [(a*kw + b)*C, ... + C), the
  order of an HWIO kernel reshaped to (kh*kw*C, K)."""
  kh, kw = kernel_hw
  (pt, pb), (pl, pr) = pads
  ho = output_size(x.shape[1], kh, stride, (pt, pb))
  wo = output_size(x.shape[2], kw, stride, (pl, pr))
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  return jnp.concatenate([xp[:, a:a + stride * (ho - 1) + 1:stride,
                             b:b + stride * (wo - 1) + 1:stride, :]
                          for a in range(kh) for b in range(kw)], axis=-1)


def _forward(x, kernel, stride, pads):
  kh, kw, c, k = kernel.shape
  out = lax.dot_general(patches(x, (kh, kw), stride, pads), kernel.reshape(kh * kw * c, k),
                        (((3,), (0,)), ((), ())), preferred_element_type=F32)
  return out.astype(jnp.result_type(x, kernel))


def kernel_gradient(x, g, kernel_hw, stride: int, pads, dtype):
  """dL/dk of the convolution (HWIO, in `dtype`) for output gradient g: patches^T g over every
  pixel of the batch, accumulated in float32."""
  kh, kw = kernel_hw
  dk = lax.dot_general(patches(x, kernel_hw, stride, pads), g,
                       (((0, 1, 2), (0, 1, 2)), ((), ())), preferred_element_type=F32)
  return dk.reshape(kh, kw, x.shape[-1], g.shape[-1]).astype(dtype)


def input_gradient(g, kernel, in_shape, stride: int, pads):
  """dL/dx. At stride 1, the convolution of g with the kernel turned 180 degrees and its in/out
  channels swapped, padded k - 1 - p: one product over g's patches (K channels per tap, in g's
  dtype). Otherwise g k^T per tap (one product for all taps), each tap's (N, Ho, Wo, C) slice put
  back at the input positions it read (offset a, b; every stride-th pixel), summed in float32."""
  kh, kw, c, k = kernel.shape
  n, h, w, _ = in_shape
  (pt, pb), (pl, pr) = pads
  if stride == 1 and max(pt, pb) <= kh - 1 and max(pl, pr) <= kw - 1:
    turned = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2).reshape(kh * kw * k, c)
    full = ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))
    return lax.dot_general(patches(g.astype(kernel.dtype), (kh, kw), 1, full), turned,
                           (((3,), (0,)), ((), ())), preferred_element_type=F32)
  hp, wp = h + pt + pb, w + pl + pr
  ho, wo = g.shape[1:3]
  taps = lax.dot_general(g, kernel.reshape(kh * kw * c, k), (((3,), (1,)), ((), ())),
                         preferred_element_type=F32)  # (N, Ho, Wo, kh*kw*C)
  zero = jnp.zeros((), F32)
  total = None
  for a in range(kh):
    for b in range(kw):
      t = (a * kw + b) * c
      placed = lax.pad(taps[..., t:t + c], zero,
                       ((0, 0, 0), (a, hp - a - stride * (ho - 1) - 1, stride - 1),
                        (b, wp - b - stride * (wo - 1) - 1, stride - 1), (0, 0, 0)))
      total = placed if total is None else total + placed
  return total[:, pt:pt + h, pl:pl + w, :]


def _fwd(x, kernel, stride, pads):
  return _forward(x, kernel, stride, pads), (x, kernel)


def _bwd(stride, pads, res, g):
  x, kernel = res
  dx = input_gradient(g, kernel, x.shape, stride, pads).astype(x.dtype)
  dk = kernel_gradient(x, g, kernel.shape[:2], stride, pads, kernel.dtype)
  return dx, dk


_gemm_conv = jax.custom_vjp(_forward, nondiff_argnums=(2, 3))
_gemm_conv.defvjp(_fwd, _bwd)


def gemm_conv(x, kernel, stride: int, pads):
  """NHWC x, HWIO kernel, one stride for both axes, explicit non-negative
  ((top, bottom), (left, right)) pads; the output in the operands' dtype."""
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  return _gemm_conv(x, kernel, int(stride), pads)
