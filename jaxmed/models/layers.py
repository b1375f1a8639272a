"""Convolution modules with Keras parameter names and layouts, all routed through `ops.conv2d`."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxmed.ops import batchnorm
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


BATCH_MOMENTS = "batch_moments"  # the collection BatchNorm sows a training batch's mean/var into


def _last(_, value):
  return value


class BatchNorm(nn.Module):
  """`nn.BatchNorm` (same variables: params scale/bias, batch_stats mean/var; same arithmetic)
  with the activation that follows it fused in, so training mode runs `ops.batchnorm`'s
  hand-written backward. `momentum` is Flax's: Keras' 0.99, torch's momentum 0.1 is 0.9 here.
  `use_scale=False` is Keras' `scale=False` (InceptionV3): no gamma, so none is trained."""
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-3
  activation: Any = None  # None | 'relu' | 'relu6'
  dtype: Any = jnp.float32
  use_scale: bool = True

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = (self.param("scale", nn.initializers.ones, (c,)) if self.use_scale
             else jnp.ones((c,), jnp.float32))  # a constant: its gradient is dropped
    bias = self.param("bias", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if self.use_running_average:
      z = batchnorm.normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon)
      return batchnorm.activate(z, self.activation).astype(self.dtype)
    y, mean, var = batchnorm.batch_norm_train(x, scale, bias, self.epsilon, self.activation)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
      # The batch's own statistics, for the precise-BatchNorm pass (training/precise_bn.py); a
      # no-op unless that collection is mutable, so the train step's program does not change.
      self.sow(BATCH_MOMENTS, "mean", mean, reduce_fn=_last, init_fn=tuple)
      self.sow(BATCH_MOMENTS, "var", var, reduce_fn=_last, init_fn=tuple)
    return y.astype(self.dtype)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF/Keras 'SAME' padding for one axis, as explicit (before, after)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2
