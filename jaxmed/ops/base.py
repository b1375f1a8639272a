"""What the op modules share: lax's convolution as the reference, and whether CPU fast paths apply.

Its own module so the imports in jaxmed.ops form a DAG: conv (the dispatcher) imports winograd,
whose backward differentiates conv_reference, and pooling asks cpu_fast_paths; both read it here.
"""

from typing import Sequence, Union

import jax
from jax import lax

from jaxmed.runtime import settings

Padding = Union[str, Sequence[tuple[int, int]]]


def conv_reference(x, kernel, strides=(1, 1), padding: Padding = "SAME", feature_group_count=1):
  """`lax.conv_general_dilated` in NHWC/HWIO: the ground truth every fast path is tested against."""
  if feature_group_count > 1:
    kh, kw, c, m = kernel.shape
    kernel = kernel.reshape(kh, kw, 1, c * m)
  return lax.conv_general_dilated(
      x, kernel, window_strides=tuple(strides), padding=padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=feature_group_count)


def conv_impl() -> str:
  """auto | lax | fast: JAXMED_CONV_IMPL as `settings.current()` holds it (read once, checked)."""
  return settings.current().conv_impl


def cpu_fast_paths() -> bool:
  """True where the CPU fast paths apply: forced (fast), or auto on the CPU backend."""
  impl = conv_impl()
  return impl == "fast" or (impl == "auto" and jax.default_backend() == "cpu")


# Whether each CPU fast path made the whole training step faster than XLA's own ops, by the
# jaxlib version it was measured on (`benchmarks/fastpath_ab.py`: `no-X` against `current`;
# benchmarks/RESULTS.md, "Fast paths by jaxlib version"). XLA's CPU backend changes a lot
# between releases, so `auto` uses a fast path only where it measured faster: on the installed
# jaxlib's version, else on the nearest older one measured (the oldest for older versions).
MEASURED_FASTER = {  # 0.10: AMD EPYC, 2026-11-22; 0.12: Intel Xeon (AMX), 2026-12-02
    "pointwise": {"0.10": True, "0.12": True},   # 0.12: ResNet50V2 128 ft 1.17x, MobileNetV2 1.05x
    "winograd": {"0.10": True, "0.12": True},    # 0.12: ResNet50V2 224 frozen 1.07x, 128 ft 1.01x
    "depthwise": {"0.10": True, "0.12": True},   # 0.12: MobileNetV2 128 ft 7.3x
    "pooling": {"0.10": True, "0.12": True},     # 0.12: ResNet50V2 128 ft 1.05x, 224 frozen 1.01x
    # both: AMD EPYC, 2026-12-03 (ops/conv.py SMALL_MAP)
    "small_maps": {"0.10": True, "0.12": True},
}


def _minor(version: str) -> tuple[int, ...]:
  return tuple(int(p) for p in version.split(".")[:2])


def measured_verdict(name: str, jaxlib_version: str) -> bool:
  """MEASURED_FASTER's answer for `name` on a jaxlib version (see above)."""
  verdicts = sorted(MEASURED_FASTER[name].items(), key=lambda kv: _minor(kv[0]))
  chosen = verdicts[0][1]
  for version, faster in verdicts:
    if _minor(version) <= _minor(jaxlib_version):
      chosen = faster
  return chosen


def fast_path(name: str) -> bool:
  """Whether the CPU fast path `name` runs: always when forced (JAXMED_CONV_IMPL=fast), never
  off the CPU or with lax forced, else as measured for the installed jaxlib."""
  if not cpu_fast_paths():
    return False
  if conv_impl() == "fast":
    return True
  import jaxlib
  return measured_verdict(name, jaxlib.__version__)


def bfloat16_gemm() -> bool:
  """Whether bfloat16 dense convolutions run as float32-accumulating GEMMs (gemm_conv, Winograd):
  only with the CPU fast paths on, and where a matrix unit makes bfloat16 products pay
  (runtime/matrix_units.py; JAXMED_BFLOAT16=on forces it, e.g. for tests)."""
  if not cpu_fast_paths() or conv_impl() == "lax":
    return False
  from jaxmed.runtime import matrix_units
  return matrix_units.bfloat16_gemm_pays()
