"""Does bfloat16 pay on this CPU? The matrix-unit flags it reports, and the installed jaxlib's
float32 and bfloat16 matrix products timed once and cached.

Intel AMX (`amx_bf16`, `amx_tile`: Sapphire Rapids and later) runs bfloat16 products several times
faster than float32, but only when the compiler uses it: measured on one 2-core Xeon with AMX
(2026-12-02, issue #21), jax 0.12.0.1's bfloat16 `x @ y` ran at 5.1x its float32 speed and
jax 0.10.2's at 0.8x, yet jax 0.10.2 too reached 5.4x when the product accumulates in float32
(`preferred_element_type=float32`), which is how a fast path calls it. So the choice is made by measurement, never by CPU name: bfloat16 pays
when a matrix unit is present and the bfloat16 product is at least `MIN_SPEEDUP` times the
float32 one. The result is cached per CPU model, flags and jaxlib version in
`cache_dir()/matrix_units/` (a probe takes about a second).
"""

import hashlib
import json
import os
import time
from pathlib import Path

from jaxmed.runtime.paths import cache_dir

MATRIX_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "amx_fp16", "avx512_bf16", "avx512_fp16")
MIN_SPEEDUP = 2.0  # bfloat16 product speed over float32 at which bfloat16 is worth its rounding
SIDE = 2048        # the timed products are SIDE x SIDE x SIDE


def cpu_description(cpuinfo: str | None = None) -> dict:
  """{'model': ..., 'matrix_flags': [...]} from /proc/cpuinfo (empty where there is none)."""
  if cpuinfo is None:
    try:
      cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
      cpuinfo = ""
  model, flags = "", set()
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "model name" and not model:
      model = value.strip()
    elif key.strip() == "flags" and not flags:
      flags = set(value.split())
  return {"model": model, "matrix_flags": [f for f in MATRIX_FLAGS if f in flags]}


def bfloat16_pays(figures: dict) -> bool:
  """The rule: an AMX bfloat16 unit present and the measured bfloat16 product (with float32
  accumulation, as a fast path would call it) at least MIN_SPEEDUP x the float32 one."""
  has_unit = "amx_bf16" in figures["matrix_flags"]
  fast = figures["bfloat16_accumulate_float32_gflops"]
  return bool(has_unit and fast >= MIN_SPEEDUP * figures["float32_gflops"])


def _time_products(side: int = SIDE, repeats: int = 5) -> dict:
  import jax
  import jax.numpy as jnp
  out = {}
  for name, dtype, accumulate in (("float32", jnp.float32, None),
                                  ("bfloat16", jnp.bfloat16, None),
                                  ("bfloat16_accumulate_float32", jnp.bfloat16, jnp.float32)):
    x = jax.random.normal(jax.random.PRNGKey(0), (side, side), dtype)
    product = jax.jit(lambda a, b, acc=accumulate: jnp.matmul(a, b, preferred_element_type=acc))
    product(x, x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
      start = time.perf_counter()
      product(x, x).block_until_ready()
      best = min(best, time.perf_counter() - start)
    out[f"{name}_gflops"] = round(2 * side ** 3 / best / 1e9, 1)
  return out


def probe(cache: bool = True) -> dict:
  """The CPU's matrix flags, this jaxlib's float32/bfloat16 product GFLOP/s (best of 5, SIDE^3)
  and `bfloat16_pays`; read from the cache when this CPU model, its flags and this jaxlib were
  probed before."""
  import jax
  import jaxlib
  cpu = cpu_description()
  key = hashlib.sha256(json.dumps([cpu, jaxlib.__version__, jax.__version__, os.cpu_count()],
                                  sort_keys=True).encode()).hexdigest()[:16]
  path = cache_dir() / "matrix_units" / f"{key}.json"
  if cache and path.exists():
    try:
      return dict(json.loads(path.read_text()), cached=True)
    except (OSError, ValueError):
      pass  # a damaged cache entry: probe again
  figures = {**cpu, "jaxlib": jaxlib.__version__, "cpus": os.cpu_count(), **_time_products(),
             "date": time.strftime("%Y-%m-%d")}
  figures["bfloat16_speedup"] = round(
      figures["bfloat16_accumulate_float32_gflops"] / figures["float32_gflops"], 2)
  figures["bfloat16_pays"] = bfloat16_pays(figures)
  if cache:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(figures, indent=1))
    os.replace(tmp, path)  # concurrent probes: the last complete one wins, none is half-written
  return dict(figures, cached=False)
