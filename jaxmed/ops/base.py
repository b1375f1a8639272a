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
