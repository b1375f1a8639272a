"""BatchNorm in training mode fused with the activation after it, with a hand-written backward.

Autodiff of `act(batchnorm(x))` makes XLA CPU read and write the activations several times
(mean, variance, normalise, clip mask, three gradient reductions, two elementwise passes). The
textbook backward needs one reduction pass over (g, x) and one elementwise pass:
  dz = g * act'(z),  dbias = sum(dz),  dscale = sum(dz * xhat),
  dx = scale / sqrt(var + eps) / n * (n * dz - dbias - xhat * dscale).
Measured (2-core CPU, batch 32, forward+backward, ms): 64x64x96 173 -> 95, 32x32x144 65 -> 28.
Statistics and the backward run in float32 whatever the input dtype (bfloat16 included).

XLA CPU runs the reductions in YNNPACK, whose fusions take only materialised operands, so every
elementwise term a reduction reads is written out first. Hence the activation's mask comes from the
saved output y (0 < y < 6 iff 0 < z < 6; in bfloat16 a z that rounds to 6 counts as clipped) and
dscale = inv * (sum(dz * x) - mean * dbias) reads x as it lies instead of a materialised xhat:
64x64x96 forward+backward 26.7 -> 19.4 ms.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

ACTIVATIONS = (None, "relu", "relu6")


def activate(z, activation):
  if activation == "relu6":
    return jnp.clip(z, 0, 6)
  if activation == "relu":
    return jnp.maximum(z, 0)
  if activation is None:
    return z
  raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def normalize(x, mean, var, scale, bias, epsilon):
  """(x - mean) / sqrt(var + eps) * scale + bias, in Flax's order of operations, float32."""
  return (x.astype(jnp.float32) - mean) * (lax.rsqrt(var + epsilon) * scale) + bias


def batch_statistics(x):
  """Mean and biased variance over all axes but the last (one pass: E[x^2] - E[x]^2, as Flax)."""
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=axes)
  return mean, jnp.maximum(jnp.mean(jnp.square(xf), axis=axes) - jnp.square(mean), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon: float, activation):
  """Returns (act(BN(x)) in x's dtype, batch mean, batch variance).

  The mean and variance outputs are for the running averages only: gradients do not flow back
  through them (their cotangents are ignored), which holds when they update `batch_stats`.
  """
  return _forward(x, scale, bias, epsilon, activation)[0]


def _forward(x, scale, bias, epsilon, activation):
  mean, var = batch_statistics(x)
  y = activate(normalize(x, mean, var, scale, bias, epsilon), activation).astype(x.dtype)
  # y is a residual at no cost: the next layer keeps it for its own backward pass.
  return (y, mean, var), (x, y if activation is not None else None, scale, bias, mean, var)


def _backward(epsilon, activation, res, cotangents):
  x, y, scale, bias, mean, var = res
  g = cotangents[0].astype(jnp.float32)
  inv = lax.rsqrt(var + epsilon)
  if activation is not None:
    g = jnp.where((y > 0) & (y < 6) if activation == "relu6" else y > 0, g, 0.0)
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.float32)
  dbias = jnp.sum(g, axis=axes)
  dscale = inv * (jnp.sum(g * xf, axis=axes) - mean * dbias)
  n = x.size // x.shape[-1]
  dx = (scale * inv / n) * (n * g - dbias - (xf - mean) * inv * dscale)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_train.defvjp(_forward, _backward)
