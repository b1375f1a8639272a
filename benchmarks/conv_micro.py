"""Micro-benchmark: lax grouped conv vs jaxmed's fast depthwise path on CPU (3x3, NHWC, fp32).

  python benchmarks/conv_micro.py [--batch 32] [--runs 7] [--dtype float32] [--json FILE]

Times forward and forward+backward (grads for input and kernel), median of --runs after warm-up.
"""

import argparse
import json
import statistics
import time

import jaxmed  # noqa: F401  (sets the XLA CPU flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.ops import depthwise
from jaxmed.ops.conv import conv_reference

SHAPES = [(64, 64, 96), (32, 32, 144), (16, 16, 192), (8, 8, 576)]


def _impl(name, stride):
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
  parser.add_argument("--json", help="also write the results to this file")
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  rng = np.random.default_rng(0)
  rows = []
  print(f"{'shape':>12} {'s':>2} | {'lax fwd':>8} {'fast fwd':>8} {'x':>5} | "
        f"{'lax fb':>8} {'fast fb':>8} {'x':>5}   (ms, median of {args.runs}, {jax.devices()[0]})")
  for h, w, c in SHAPES:
    x = jnp.asarray(rng.normal(size=(args.batch, h, w, c)), dtype)
    k = jnp.asarray(rng.normal(size=(args.kernel, args.kernel, c, 1)), dtype)
    for stride in (1, 2):
      row = {"shape": [args.batch, h, w, c], "stride": stride, "dtype": args.dtype}
      for name in ("lax", "fast"):
        conv = _impl(name, stride)
        fwd = jax.jit(conv)
        fb = jax.jit(jax.grad(lambda x, k, conv=conv: jnp.sum(conv(x, k).astype(jnp.float32) ** 2),
                              argnums=(0, 1)))
        row[f"{name}_fwd_ms"] = _median_ms(fwd, (x, k), args.runs)
        row[f"{name}_fb_ms"] = _median_ms(fb, (x, k), args.runs)
      rows.append(row)
      print(f"{f'{h}x{w}x{c}':>12} {stride:>2} | {row['lax_fwd_ms']:8.2f} {row['fast_fwd_ms']:8.2f} "
            f"{row['lax_fwd_ms'] / row['fast_fwd_ms']:5.1f} | {row['lax_fb_ms']:8.2f} "
            f"{row['fast_fb_ms']:8.2f} {row['lax_fb_ms'] / row['fast_fb_ms']:5.1f}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
