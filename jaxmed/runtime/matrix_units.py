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
  with jax.ensure_compile_time_eval():  # timed for real even when asked while a model is traced
    return _timed(jax, jnp, side, repeats)


def _timed(jax, jnp, side: int, repeats: int) -> dict:
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


_verdict: dict = {}


def bfloat16_gemm_pays() -> bool:
  """This process's answer (fixed at the first call, like runtime/settings): whether bfloat16
  dense convolutions run as GEMMs and `model.dtype='auto'` picks bfloat16. JAXMED_BFLOAT16=on/off
  decide outright; auto asks `probe`, which times nothing where the CPU has no amx_bf16 flag."""
  from jaxmed.runtime import settings
  mode = settings.current().bfloat16
  if mode != "auto":
    return mode == "on"
  if "pays" not in _verdict:
    _verdict["pays"] = ("amx_bf16" in cpu_description()["matrix_flags"]
                        and bool(probe()["bfloat16_pays"]))
  return _verdict["pays"]


def choose_dtype(setting: str, backend: str) -> dict:
  """What `model.dtype` (float32 | bfloat16 | auto) means on `backend`: {'setting', 'dtype',
  'reason', 'probe'} for summary.json. 'auto' is float32 off the CPU (set bfloat16 outright on
  GPU/TPU) and, on a CPU, bfloat16 exactly where bfloat16_gemm_pays()."""
  if setting != "auto":
    return {"setting": setting, "dtype": setting, "reason": "set in the config", "probe": None}
  if backend != "cpu":
    return {"setting": "auto", "dtype": "float32", "probe": None,
            "reason": f"{backend} backend: 'auto' chooses only on a CPU "
                      "(set model.dtype='bfloat16')"}
  from jaxmed.runtime import settings
  mode = settings.current().bfloat16
  cpu = cpu_description()
  if mode != "auto":
    figures, reason = cpu, f"JAXMED_BFLOAT16={mode}"
  elif "amx_bf16" not in cpu["matrix_flags"]:
    figures, reason = cpu, "no matrix unit (amx_bf16) on this CPU"
  else:
    figures = probe()
    reason = (f"bfloat16 product {figures['bfloat16_speedup']}x float32 "
              f"({'>=' if figures['bfloat16_pays'] else '<'} {MIN_SPEEDUP}x)")
  dtype = "bfloat16" if bfloat16_gemm_pays() else "float32"
  return {"setting": "auto", "dtype": dtype, "reason": reason, "probe": figures}
