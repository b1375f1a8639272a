"""Max pooling as a maximum over shifted strided slices, for XLA CPU.

`nn.max_pool` lowers to reduce-window; its gradient to a variadic reduce-window that carries
argmax indices (four iota tensors of the padded input's size) and a scatter. On the 2-core CPU that
cost ~100 ms of a 1.5 s ResNet50V2 128 px training step (53 ms for the reduce-window alone). The
same max as a chain of `jnp.maximum` over the kh*kw window taps is one elementwise fusion; its
hand-written backward gives each output's gradient to the first tap holding the maximum, as
reduce-window's does (ties included), and adds the taps' strided views back by interior padding:
32x66x66x64, 3x3 stride 2, forward+backward 89-105 -> 17-22 ms.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxmed.ops.base import cpu_fast_paths, fast_path
from jaxmed.ops.depthwise import resolve_padding


def max_pool(x, window, strides=None, padding="VALID"):
  """NHWC max pooling with `nn.max_pool`'s arguments and semantics (padding counts as -inf)."""
  window = tuple(window)
  strides = tuple(strides) if strides is not None else (1,) * len(window)
  if x.ndim != 4 or len(window) != 2 or not cpu_fast_paths() or not fast_path("pooling"):
    return nn.max_pool(x, window, strides, padding)
  return _max_pool(x, window, strides, resolve_padding(padding, x.shape[1:3], window, strides))


def _taps(xp, window, strides, out_hw):
  """(i, j, the window tap's strided view of the padded input), in row-major tap order."""
  (kh, kw), (sh, sw), (ho, wo) = window, strides, out_hw
  for i in range(kh):
    for j in range(kw):
      yield i, j, xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]


def _pad(x, pads):
  (pt, pb), (pl, pr) = pads
  return lax.pad(x, jnp.array(-jnp.inf, x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))


def _out_hw(xp, window, strides):
  return tuple((xp.shape[1 + a] - window[a]) // strides[a] + 1 for a in range(2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
  xp = _pad(x, pads)
  y = None
  for _, _, tap in _taps(xp, window, strides, _out_hw(xp, window, strides)):
    y = tap if y is None else jnp.maximum(y, tap)
  return y


def _max_pool_fwd(x, window, strides, pads):
  y = _max_pool(x, window, strides, pads)
  return y, (x, y)


def _max_pool_bwd(window, strides, pads, res, g):
  """Each output's gradient goes to the first tap (row-major) that holds its maximum, as
  reduce-window's does; the taps' strided views are scattered back by interior padding."""
  x, y = res
  xp = _pad(x, pads)
  (sh, sw), (ho, wo) = strides, y.shape[1:3]
  found = jnp.zeros(y.shape, bool)
  dxp = None
  for i, j, tap in _taps(xp, window, strides, (ho, wo)):
    hit = (tap == y) & ~found
    found = found | hit
    part = lax.pad(jnp.where(hit, g, 0).astype(g.dtype), jnp.zeros((), g.dtype),
                   ((0, 0, 0), (i, xp.shape[1] - i - sh * (ho - 1) - 1, sh - 1),
                    (j, xp.shape[2] - j - sw * (wo - 1) - 1, sw - 1), (0, 0, 0)))
    dxp = part if dxp is None else dxp + part
  (pt, _), (pl, _) = pads
  return (dxp[:, pt:pt + x.shape[1], pl:pl + x.shape[2], :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)

