"""The one convolution every jaxmed model calls, so the kernel can be chosen per backend.

Layouts are Keras': x is NHWC, kernel is HWIO for dense convolutions and (kh, kw, C, 1) for
depthwise ones (feature_group_count == C). `padding` is 'SAME', 'VALID' or explicit
((top, bottom), (left, right)) pairs, which Keras' ZeroPadding2D and torchvision's symmetric
padding both reduce to.

Set JAXMED_CONV_IMPL=lax or =fast to force a kernel (read once per process: runtime/settings.py;
tests use settings.override); default is automatic.
"""

import jax

from jaxmed.ops import depthwise, gemm_conv, pointwise, winograd
# Re-exported: models, tests and benchmarks import these from conv.
from jaxmed.ops.base import (Padding, bfloat16_gemm, conv_impl, conv_reference,  # noqa: F401
                             cpu_fast_paths, fast_path)


def _fast_depthwise_ok(x, kernel, strides, padding, feature_group_count):
  """True for the depthwise convs the shifted multiply-add path implements."""
  if x.ndim != 4 or kernel.ndim != 4:
    return False
  kh, kw, c, m = kernel.shape
  if feature_group_count != x.shape[-1] or c != x.shape[-1] or m != 1 or feature_group_count == 1:
    return False
  if kh % 2 == 0 or kw % 2 == 0 or len(set(strides)) != 1 or strides[0] not in (1, 2):
    return False
  if isinstance(padding, str):
    return padding.upper() in ("SAME", "VALID")
  return len(padding) == 2 and all(len(p) == 2 and min(p) >= 0 for p in padding)


def _pointwise_ok(x, kernel, strides, padding, feature_group_count):
  """True for 1x1 dense convs with equal strides that read no padding."""
  if x.ndim != 4 or kernel.shape[:2] != (1, 1) or feature_group_count != 1:
    return False
  if len(set(strides)) != 1:
    return False
  if isinstance(padding, str):
    return padding.upper() in ("SAME", "VALID")  # both pad nothing for a 1x1 window
  return all(lo == 0 and hi == 0 for lo, hi in padding)


# Below this many input or output channels the Winograd transforms cost more than the products
# they save. `python benchmarks/conv_micro.py --dense` (ResNet50V2's convs, batch 32, forward,
# speed vs lax): 56x56x64 0.8x; 28x28x128 1.2x, 14x14x256 1.4x, 7x7x512 1.3x, 16x16x128 1.3x,
# 8x8x256 1.4x, 4x4x512 1.0x. Whole frozen ResNet50V2 step: 0.90x (224 px) and 0.92x (128 px)
# of the time with lax (benchmarks/fastpath_ab.py --phase frozen --variants nowinograd,current).
WINOGRAD_MIN_CHANNELS = 128


def _winograd_ok(x, kernel, strides, padding, feature_group_count):
  """True for float32 3x3 stride-1 dense convs wide enough for Winograd to pay off."""
  if x.ndim != 4 or kernel.shape[:2] != (3, 3) or feature_group_count != 1 or strides != (1, 1):
    return False
  if x.dtype != jax.numpy.float32 or kernel.dtype != jax.numpy.float32:
    return False  # bfloat16 would lose bits in the transforms; lax keeps its own accuracy
  if min(kernel.shape[2:]) < WINOGRAD_MIN_CHANNELS:
    return False
  if isinstance(padding, str) and padding.upper() not in ("SAME", "VALID"):
    return False
  pads = depthwise.resolve_padding(padding, x.shape[1:3], (3, 3), 1)
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    return False
  # An empty output is lax's to report (it raises for shapes that leave no output).
  return all(winograd.output_size(n, p) > 0 for n, p in zip(x.shape[1:3], pads))


def _gemm_pads(x, kernel, strides, padding, feature_group_count):
  """(explicit pads, output [height, width]) when a dense conv (kernel > 1x1, equal strides, no
  negative padding, a non-empty output) can run as gemm_conv, else (None, None)."""
  if (x.ndim != 4 or feature_group_count != 1 or len(set(strides)) != 1
      or kernel.shape[:2] == (1, 1)):
    return None, None
  if isinstance(padding, str) and padding.upper() not in ("SAME", "VALID"):
    return None, None
  pads = depthwise.resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides[0])
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    return None, None
  out = [gemm_conv.output_size(n, k, strides[0], p)
         for n, k, p in zip(x.shape[1:3], kernel.shape[:2], pads)]
  return (pads, out) if min(out) > 0 else (None, None)  # an empty output: lax reports it


def _bfloat16_gemm_pads(x, kernel, strides, padding, feature_group_count):
  """Explicit pads when a bfloat16 dense conv should run as GEMMs on this CPU, else None."""
  if x.dtype != jax.numpy.bfloat16 or kernel.dtype != jax.numpy.bfloat16 or not bfloat16_gemm():
    return None
  return _gemm_pads(x, kernel, strides, padding, feature_group_count)[0]


# Dense convs whose output is at most 2x2 (at 64 px input: ResNet50V2's last stage and the
# stride-2 conv into it, VGG16's last block): forward+backward, XLA:CPU's kernels took 1.3-24x
# as long as one im2col product (3x3 convs, 64-512 channels, batch 32, strides 1 and 2, outputs
# 1x1 and 2x2, AMD EPYC, jax 0.10.2 and 0.12.0.1; 512 -> 512 channels at 2x2: 386-462 ms against
# 19-23); at 3x3 outputs lax won some shapes, so those stay with lax. benchmarks/RESULTS.md
# "Convolutions on maps of at most 2x2".
SMALL_MAP = 2


def _small_map_pads(x, kernel, strides, padding, feature_group_count):
  """Explicit pads when a float32 dense conv's output is at most SMALL_MAP x SMALL_MAP, else None
  (bfloat16 was not measured on these shapes)."""
  if x.dtype != jax.numpy.float32 or kernel.dtype != jax.numpy.float32:
    return None
  pads, out = _gemm_pads(x, kernel, strides, padding, feature_group_count)
  return pads if pads is not None and max(out) <= SMALL_MAP else None


def _bfloat16_gemm_conv(x, kernel, stride, pads):
  """Wide 3x3 stride-1 convs by Winograd (2.25x fewer products; its dx is a Winograd conv with
  padding 2 - p, so p <= 2), the rest as one im2col product; all on the matrix unit."""
  if (kernel.shape[:2] == (3, 3) and stride == 1 and max(max(p) for p in pads) <= 2
      and min(kernel.shape[2:]) >= WINOGRAD_MIN_CHANNELS):
    return winograd.winograd_conv3x3(x, kernel, pads)
  return gemm_conv.gemm_conv(x, kernel, stride, pads)


def conv2d(x, kernel, strides=(1, 1), padding: Padding = "SAME", feature_group_count=1):
  """Convolution used by all models; picks the fastest correct kernel for the current backend.

  On CPU: 1x1 convs run as GEMMs (`pointwise`, 2-3x faster forward+backward than lax, whose
  kernel gradient transposes both operands), depthwise convs as shifted multiply-adds
  (`depthwise`, XLA CPU's grouped conv is 10-40x slower at 3x3, and 7-31x slower forward+backward
  at EfficientNet's 5x5 and ConvNeXt's 7x7: benchmarks/RESULTS.md "New backbones"), wide 3x3
  stride-1 convs as Winograd F(2x2, 3x3) (`winograd`, 2.25x fewer products; gradients by lax),
  dense convs with outputs of at most 2x2 as one im2col product (`gemm_conv`, see SMALL_MAP);
  other dense convs use lax (its XLA CPU kernels beat shifted-GEMM and im2col). Squeeze-and-
  excitation's 1x1 convs on pooled maps are pointwise GEMMs; swish, GELU and DenseNet's
  concatenations are XLA's own fused elementwise ops. bfloat16 on a CPU whose matrix unit makes
  bfloat16 products pay (`bfloat16_gemm`): every other dense conv as float32-accumulating GEMMs
  (Winograd for wide 3x3 stride 1, else im2col; XLA:CPU's bfloat16 convs miss the unit). GPU and
  TPU keep lax everywhere.
  """
  strides = tuple(strides)
  on_cpu = cpu_fast_paths()
  if on_cpu and fast_path("pointwise") and _pointwise_ok(x, kernel, strides, padding,
                                                          feature_group_count):
    return pointwise.strided_pointwise_conv(x, kernel, strides[0])
  if on_cpu and kernel.shape[:2] != (1, 1):
    pads = _bfloat16_gemm_pads(x, kernel, strides, padding, feature_group_count)
    if pads is not None:
      return _bfloat16_gemm_conv(x, kernel, strides[0], pads)
    pads = _small_map_pads(x, kernel, strides, padding, feature_group_count)
    if pads is not None and fast_path("small_maps"):
      return gemm_conv.gemm_conv(x, kernel, strides[0], pads)
  if on_cpu and fast_path("winograd") and _winograd_ok(x, kernel, strides, padding,
                                                        feature_group_count):
    pads = depthwise.resolve_padding(padding, x.shape[1:3], (3, 3), 1)
    return winograd.winograd_conv3x3(x, kernel, pads)
  # Depthwise: single device only. The op alone matches lax under 4-device batch sharding
  # (tests/test_conv_sharded.py), but inside a sharded MobileNetV2 step its kernel gradient once
  # came out wrong (max error 0.47 vs 1e-3 for lax); until that is understood, sharded runs keep lax.
  use_fast = (on_cpu and fast_path("depthwise")
              and (conv_impl() == "fast" or jax.device_count() == 1))
  if use_fast and _fast_depthwise_ok(x, kernel, strides, padding, feature_group_count):
    pads = depthwise.resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides[0])
    return depthwise.depthwise_conv(x, kernel, strides[0], pads)
  return conv_reference(x, kernel, strides, padding, feature_group_count)
