"""Micro-benchmark: lax vs jaxmed's CPU fast paths, per convolution (NHWC, fp32).

  python benchmarks/conv_micro.py [--batch 32] [--runs 7] [--dtype float32] [--json FILE]
  python benchmarks/conv_micro.py --dense   # 3x3 stride-1 dense convs: lax vs Winograd
  python benchmarks/conv_micro.py --gemm --dtype bfloat16   # other dense convs: lax vs im2col

Default: depthwise convs (MobileNet shapes), lax's grouped conv vs the shifted multiply-adds.
--dense: ResNet50V2's 3x3 stride-1 convs at 224 and 128 px (C in = C out), lax vs Winograd
F(2x2, 3x3) (whose float32 gradient is lax's; in bfloat16 both gradients are products).
--gemm: the dense convs a bfloat16 model on a CPU with a matrix unit runs as one im2col product
(ops/gemm_conv.py): ResNet50V2's 7x7 stem, stage-1 3x3 and strided 3x3s at 128 px, DenseNet121's
3x3 128->32 at 224 px; lax vs im2col. Run it with --dtype bfloat16 on an AMX machine to see where
the im2col form wins there (its patches cost kh*kw times the input's memory). Times forward and forward+backward (grads for input and
kernel), median of --runs after warm-up. Runs under the allocator `python -m jaxmed.train` uses
(mimalloc; JAXMED_ALLOCATOR=system for glibc malloc, where fresh temporaries are page-faulted on
every call).
"""

import argparse
import json
import statistics
import time

import jaxmed  # noqa: F401  (sets the XLA CPU flags before jax initialises)
from jaxmed.runtime import platform
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.ops import depthwise, gemm_conv, winograd
from jaxmed.ops.conv import conv_reference

SHAPES = [(64, 64, 96), (32, 32, 144), (16, 16, 192), (8, 8, 576)]
DENSE_SHAPES = [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512),  # ResNet50V2, 224 px
                (32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512)]   # and 128 px
PAD1 = ((1, 1), (1, 1))
GEMM_SHAPES = [  # (h, w, C, K, kernel, stride)
    (128, 128, 3, 64, 7, 2), (32, 32, 64, 64, 3, 1), (32, 32, 64, 64, 3, 2),
    (16, 16, 128, 128, 3, 2), (8, 8, 256, 256, 3, 2),                   # ResNet50V2, 128 px
    (56, 56, 128, 32, 3, 1), (28, 28, 128, 32, 3, 1), (14, 14, 128, 32, 3, 1)]  # DenseNet121


def _impl(name, stride, dense=False, kernel_hw=None, in_hw=None):
  if kernel_hw is not None:  # --gemm
    pads = depthwise.resolve_padding("SAME", in_hw, kernel_hw, stride)
    if name == "lax":
      return lambda x, k: conv_reference(x, k, (stride, stride), pads)
    return lambda x, k: gemm_conv.gemm_conv(x, k, stride, pads)
  if dense:
    if name == "lax":
      return lambda x, k: conv_reference(x, k, (1, 1), PAD1)
    return lambda x, k: winograd.winograd_conv3x3(x, k, PAD1)
  if name == "lax":
    return lambda x, k: conv_reference(x, k, (stride, stride), "SAME", x.shape[-1])

  def fast(x, k):
    pads = depthwise.resolve_padding("SAME", x.shape[1:3], k.shape[:2], stride)
    return depthwise.depthwise_conv(x, k, stride, pads)
  return fast


def _median_ms(fn, args, runs):
  jax.block_until_ready(fn(*args))  # compile
  jax.block_until_ready(fn(*args))  # warm-up
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--runs", type=int, default=7)
  parser.add_argument("--kernel", type=int, default=3)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--dense", action="store_true",
                      help="3x3 stride-1 dense convs (ResNet), lax vs Winograd")
  parser.add_argument("--gemm", action="store_true",
                      help="other dense convs (ResNet50V2 stem/strided, DenseNet), lax vs im2col")
  parser.add_argument("--json", help="also write the results to this file")
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  rng = np.random.default_rng(0)
  rows = []
  print(f"{'shape':>12} {'s':>2} | {'lax fwd':>8} {'fast fwd':>8} {'x':>5} | "
        f"{'lax fb':>8} {'fast fb':>8} {'x':>5}   (ms, median of {args.runs}, {jax.devices()[0]})")
  if args.gemm:
    cases = [((h, w, c), (kh, kh, c, k), (stride,)) for h, w, c, k, kh, stride in GEMM_SHAPES]
  elif args.dense:
    cases = [((h, w, c), (3, 3, c, c), (1,)) for h, w, c in DENSE_SHAPES]
  else:
    cases = [((h, w, c), (args.kernel, args.kernel, c, 1), (1, 2)) for h, w, c in SHAPES]
  for (h, w, c), kshape, strides in cases:
    x = jnp.asarray(rng.normal(size=(args.batch, h, w, c)), dtype)
    k = jnp.asarray(rng.normal(size=kshape) / np.sqrt(np.prod(kshape[:3])), dtype)
    for stride in strides:
      row = {"shape": [args.batch, h, w, c], "stride": stride, "dtype": args.dtype,
             "kernel": list(kshape)}
      for name in ("lax", "fast"):
        conv = _impl(name, stride, args.dense, kshape[:2] if args.gemm else None, (h, w))
        fwd = jax.jit(conv)
        fb = jax.jit(jax.grad(lambda x, k, conv=conv: jnp.sum(conv(x, k).astype(jnp.float32) ** 2),
                              argnums=(0, 1)))
        row[f"{name}_fwd_ms"] = _median_ms(fwd, (x, k), args.runs)
        row[f"{name}_fb_ms"] = _median_ms(fb, (x, k), args.runs)
      rows.append(row)
      label = f"{h}x{w}x{c}" + (f"->{kshape[3]} {kshape[0]}x{kshape[1]}" if args.gemm else "")
      print(f"{label:>12} {stride:>2} | {row['lax_fwd_ms']:8.2f} {row['fast_fwd_ms']:8.2f} "
            f"{row['lax_fwd_ms'] / row['fast_fwd_ms']:5.1f} | {row['lax_fb_ms']:8.2f} "
            f"{row['fast_fb_ms']:8.2f} {row['lax_fb_ms'] / row['fast_fb_ms']:5.1f}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  platform.restart_with_fast_allocator()  # as python -m jaxmed.train runs (JAXMED_ALLOCATOR)
  main()
