"""Depthwise convolution as shifted multiply-adds, for XLA CPU.

XLA CPU runs `feature_group_count == C` convolutions 10-40x slower than this (shared/CPU_CONV_NOTES.md).
Each output is a sum of kh*kw shifted input windows scaled per channel; XLA fuses that into one
elementwise loop vectorised over the (minor) channel axis. Autodiff of that graph is slow (the kernel
gradient becomes nine fused pad/slice reductions), so both gradients are written by hand.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax


def resolve_padding(padding, in_hw, kernel_hw, stride):
  """Returns explicit ((top, bottom), (left, right)) pads, matching lax's 'SAME'/'VALID'.

  `stride` is one int or a (height, width) pair (pooling windows may differ per axis)."""
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      return ((0, 0), (0, 0))
    if padding.upper() != "SAME":
      raise ValueError(f"unsupported padding {padding!r}")
    strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
    pads = []
    for size, k, stride in zip(in_hw, kernel_hw, strides):
      total = max((-(-size // stride) - 1) * stride + k - size, 0)
      pads.append((total // 2, total - total // 2))
    return tuple(pads)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _out_size(size, k, stride, pad):
  return (size + pad[0] + pad[1] - k) // stride + 1


def _phases(x, pads, stride):
  """Pads x and splits it into stride*stride phases: (s*s, N, Hq, Wq, C), phase a*s+b = xp[:, a::s, b::s].

  With phases every tap of a strided conv reads a contiguous window, so the forward pass computes only
  the needed outputs and the kernel gradient can use `dynamic_slice` (which has no stride argument).
  """
  s = stride
  (pt, pb), (pl, pr) = pads
  n, h, w, c = x.shape
  hp, wp = h + pt + pb, w + pl + pr
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (pt, pb + (-hp) % s, 0), (pl, pr + (-wp) % s, 0), (0, 0, 0)))
  if s == 1:
    return xp[None]
  hq, wq = xp.shape[1] // s, xp.shape[2] // s
  xp = xp.reshape(n, hq, s, wq, s, c).transpose(2, 4, 0, 1, 3, 5)
  return xp.reshape(s * s, n, hq, wq, c)


def _chunk_size(x, target_bytes=3 << 20):
  """Largest batch divisor whose slice of x fits in ~3 MB (at least 1 image).

  Only the kernel gradient loops over batch chunks. The forward pass and the input gradient once did
  too, to keep their padded temporaries small: with malloc on huge pages (jaxmed/runtime/platform.py) the
  whole-batch form is faster (MobileNetV2 128 px step x0.92-0.94 in an in-process A/B against
  the chunked form, benchmarks/RESULTS.md)."""
  n, image_bytes = x.shape[0], math.prod(x.shape[1:]) * x.dtype.itemsize
  return max(d for d in range(1, n + 1) if n % d == 0 and (d == 1 or d * image_bytes <= target_bytes))


def _forward(x, kernel, stride, pads):
  kh, kw = kernel.shape[:2]
  s = stride
  ho = _out_size(x.shape[1], kh, s, pads[0])
  wo = _out_size(x.shape[2], kw, s, pads[1])
  xph = _phases(x, pads, s)
  k = kernel[..., 0]
  y = None
  for i in range(kh):
    for j in range(kw):
      p, oi, oj = (i % s) * s + j % s, i // s, j // s
      term = xph[p, :, oi:oi + ho, oj:oj + wo, :] * k[i, j]
      y = term if y is None else y + term
  return y


def _input_grad(g, kernel, in_hw, stride, pads):
  """dx[h] = sum_i g[(h + pt - i) / s] * k[i] over the i where that index is an integer in range.

  For stride s, dx is split into s*s output phases; each phase is a small stride-1 correlation of g
  with the taps that reach it (none of the zeros a dilated-g formulation would multiply), then the
  phases are interleaved back.
  """
  s = stride
  kh, kw = kernel.shape[:2]
  n, ho, wo, c = g.shape
  k = kernel[..., 0]

  def axis_plan(a, size_out, k_len, pad_lo, g_len):
    # Taps i = i0 + s*r hit phase a; g index = m + d - r for output m of this phase.
    i0 = (a + pad_lo) % s
    taps = list(range(i0, k_len, s))
    m_len = -(-size_out // s)
    if not taps:
      return [], (0, 0), m_len
    d = (a + pad_lo - i0) // s
    low = len(taps) - 1 - d
    high = m_len + len(taps) - 1 - (g_len + low)
    return taps, (low, high), m_len

  rows = []
  for a in range(s):
    taps_h, pad_h, mh = axis_plan(a, in_hw[0], kh, pads[0][0], ho)
    cols = []
    for b in range(s):
      taps_w, pad_w, mw = axis_plan(b, in_hw[1], kw, pads[1][0], wo)
      if not taps_h or not taps_w:
        cols.append(jnp.zeros((n, mh, mw, c), g.dtype))
        continue
      gp = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (*pad_h, 0), (*pad_w, 0), (0, 0, 0)))
      acc = None
      for r, i in enumerate(reversed(taps_h)):
        for q, j in enumerate(reversed(taps_w)):
          term = gp[:, r:r + mh, q:q + mw, :] * k[i, j]
          acc = term if acc is None else acc + term
      cols.append(acc)
    rows.append(cols[0] if s == 1 else jnp.stack(cols, axis=3))  # (N, mh, mw, s, C)
  if s == 1:
    return rows[0]
  dx = jnp.stack(rows, axis=2)  # (N, mh, s, mw, s, C)
  dx = dx.reshape(n, dx.shape[1] * s, dx.shape[3] * s, c)
  return dx[:, :in_hw[0], :in_hw[1], :]


def _kernel_grad(x, g, kernel_shape, stride, pads):
  """dk[i, j, c] = sum_{n,h,w} xp[n, i + s*h, j + s*w, c] * g[n, h, w, c].

  Measured on 2-core CPU, 64x64x96 batch 32: all taps at once over the whole batch 150-300 ms
  (unrolled, XLA fuses the nine reductions into one slow loop; as a tap loop, each window slice is a
  fresh 50 MB buffer, i.e. page faults), vs ~50 ms for this: a `fori_loop` over batch chunks of ~3 MB
  (padded per chunk, so every temporary stays small and cache-resident), and inside it a `fori_loop`
  over taps, each a `dynamic_slice` window times g reduced to (C,). Accumulates in float32.
  """
  kh, kw, c, _ = kernel_shape
  s = stride
  n, ho, wo, _ = g.shape
  chunk = _chunk_size(x)

  def tap_sums(b, dk):
    xph = _phases(lax.dynamic_slice_in_dim(x, b * chunk, chunk, 0), pads, s)
    gb = lax.dynamic_slice_in_dim(g, b * chunk, chunk, 0).astype(jnp.float32)

    def tap(t, dk):
      i, j = t // kw, t % kw
      win = lax.dynamic_slice(xph, ((i % s) * s + j % s, 0, i // s, j // s, 0), (1, chunk, ho, wo, c))
      red = jnp.sum(win[0].astype(jnp.float32) * gb, axis=(0, 1, 2))
      return lax.dynamic_update_slice(dk, dk[t][None] + red[None], (t, 0))

    return lax.fori_loop(0, kh * kw, tap, dk)

  dk = lax.fori_loop(0, n // chunk, tap_sums, jnp.zeros((kh * kw, c), jnp.float32))
  return dk.reshape(kh, kw, c, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x, kernel, stride, pads):
  """Depthwise NHWC conv, kernel (kh, kw, C, 1), int stride, explicit pads ((t, b), (l, r))."""
  return _forward(x, kernel, stride, pads)


def _fwd(x, kernel, stride, pads):
  return _forward(x, kernel, stride, pads), (x, kernel)


def _bwd(stride, pads, res, g):
  x, kernel = res
  dx = _input_grad(g, kernel, x.shape[1:3], stride, pads)
  dk = _kernel_grad(x, g, kernel.shape, stride, pads)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


depthwise_conv.defvjp(_fwd, _bwd)
