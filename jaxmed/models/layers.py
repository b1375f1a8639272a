"""Convolution modules with Keras parameter names and layouts, all routed through `ops.conv2d`."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxmed.ops.conv import conv2d

Padding = Any  # 'SAME' | 'VALID' | ((top, bottom), (left, right))


class Conv(nn.Module):
  """Keras Conv2D: kernel (kh, kw, in, out) named 'kernel', optional 'bias'."""
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.he_normal(), (kh, kw, x.shape[-1], self.features))
    y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class DepthwiseConv(nn.Module):
  """Keras DepthwiseConv2D (depth_multiplier 1): kernel (kh, kw, C, 1) named 'depthwise_kernel'."""
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    c = x.shape[-1]
    kernel = self.param("depthwise_kernel", nn.initializers.he_normal(), (kh, kw, c, 1))
    y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.padding,
               feature_group_count=c)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (c,)).astype(self.dtype)
    return y


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF/Keras 'SAME' padding for one axis, as explicit (before, after)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def relu6(x):
  return jnp.clip(x, 0, 6)
