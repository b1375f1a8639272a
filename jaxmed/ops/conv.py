"""The one convolution every jaxmed model calls, so the kernel can be chosen per backend.

Layouts are Keras': x is NHWC, kernel is HWIO for dense convolutions and (kh, kw, C, 1) for
depthwise ones (feature_group_count == C). `padding` is 'SAME', 'VALID' or explicit
((top, bottom), (left, right)) pairs, which Keras' ZeroPadding2D and torchvision's symmetric
padding both reduce to.
"""

from typing import Sequence, Union

import jax
from jax import lax

Padding = Union[str, Sequence[tuple[int, int]]]


def conv_reference(x, kernel, strides=(1, 1), padding: Padding = "SAME", feature_group_count=1):
  """`lax.conv_general_dilated` in NHWC/HWIO: the ground truth every fast path is tested against."""
  if feature_group_count > 1:
    kh, kw, c, m = kernel.shape
    kernel = kernel.reshape(kh, kw, 1, c * m)
  return lax.conv_general_dilated(
      x, kernel, window_strides=tuple(strides), padding=padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=feature_group_count)


def conv2d(x, kernel, strides=(1, 1), padding: Padding = "SAME", feature_group_count=1):
  """Convolution used by all models; picks the fastest correct kernel for the current backend."""
  return conv_reference(x, kernel, strides, padding, feature_group_count)
