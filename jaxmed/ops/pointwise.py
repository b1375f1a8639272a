"""1x1 convolution as one matrix product, with its gradients as two more, for XLA CPU.

A 1x1 conv is a GEMM over the (N*H*W, C) matrix of pixels. XLA CPU lowers the kernel gradient
of `conv_general_dilated` as a convolution whose window is the whole image, after transposing
both operands so batch and features swap places; those transposes cost more than the product
(MobileNetV2 128 px, batch 32: 64x64x16->96 forward+backward 98 ms with lax, 33 ms as GEMMs).
Here dk = x^T g is a dot contracting the pixel axis of both operands as they lie in memory.

Every product accumulates in float32 and rounds to the operands' dtype after: the same for
float32, and for bfloat16 both more exact and, on a CPU with a matrix unit, the form XLA sends
to it (jax 0.10.2 on a Xeon with AMX: a bfloat16 2048^3 product at 239 GFLOP/s with a bfloat16
result, 1625 with float32 accumulation; jaxmed/runtime/matrix_units.py).
"""

import jax
from jax import lax


def _matmul(x, k2d):
  out = lax.dot_general(x, k2d, (((x.ndim - 1,), (0,)), ((), ())),
                        preferred_element_type=jax.numpy.float32)
  return out.astype(jax.numpy.result_type(x, k2d))


@jax.custom_vjp
def pointwise_conv(x, kernel):
  """NHWC x, (1, 1, C, D) kernel -> NHWC (N, H, W, D); stride 1, no padding."""
  return _matmul(x, kernel[0, 0])


def _fwd(x, kernel):
  return _matmul(x, kernel[0, 0]), (x, kernel)


def _bwd(res, g):
  x, kernel = res
  c, d = kernel.shape[2:]
  dx = lax.dot_general(g, kernel[0, 0], (((3,), (1,)), ((), ())),
                       preferred_element_type=jax.numpy.float32)
  dk = lax.dot_general(x.reshape(-1, c), g.reshape(-1, d), (((0,), (0,)), ((), ())),
                       preferred_element_type=jax.numpy.float32)
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


pointwise_conv.defvjp(_fwd, _bwd)


def strided_pointwise_conv(x, kernel, stride: int):
  """A strided 1x1 conv reads every stride-th pixel: subsample (autodiff scatters the gradient
  back), then the GEMM."""
  if stride > 1:
    x = x[:, ::stride, ::stride, :]
  return pointwise_conv(x, kernel)
