"""EfficientNetV2 (Tan & Le 2021), B0 and S, with Keras Applications' layer names.

Keras' `EfficientNetV2B0` / `EfficientNetV2S` (width and depth coefficients 1.0, so the block table
below is Keras' own without rounding): a stem, fused-MBConv blocks (a full 3x3 conv in place of
expand + depthwise; no squeeze-excite in these variants), MBConv blocks with squeeze-excite, and a
1x1 top conv, all with swish (x * sigmoid(x)), BatchNorm eps 1e-3 and momentum 0.9, and 'same'
(TF SAME, asymmetric on even sizes) padding everywhere.

Keras quirks reproduced:
- The input normalisation is part of the Keras model (`include_preprocessing=True`, the default),
  so jaxmed feeds 0..255 floats ('raw') and this module does Keras' arithmetic: the B variants
  rescale by 1/255 then `Normalization` with ImageNet mean and variance, i.e.
  (x - mean) / max(sqrt(variance), 1e-7); S rescales to x * (1/128) - 1. Neither layer stores
  weights (the constants are given to the constructor), so nothing of them is in a weight file.
- A fused block with expand ratio 1 has no expand conv: its `project_conv` is the 3x3 strided conv
  and is followed by swish (`project_activation`); every other project conv is linear.
- Squeeze-excite width is int(block input filters * 0.25), not of the expanded width.
- Stochastic depth: Keras passes `drop_connect_rate * b / num_blocks` (b = the block's index from 0)
  as a Dropout *rate* (its argument is misleadingly named survival_probability), with noise shape
  (N, 1, 1, 1), before the residual add of blocks that have one; block 0 has none. Here it runs
  only when training a block whose stage is trainable, drawing from the 'dropout' rng stream.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import Conv, DepthwiseConv
from jaxmed.models.mobilenet_v1 import convert_keras_layers, keras_bn

# (fused, repeats, input filters, output filters, expand ratio, se ratio, first stride) per Keras
# block group (`DEFAULT_BLOCKS_ARGS`); every kernel is 3x3.
GROUPS = {
    "b0": ((True, 1, 32, 16, 1, 0, 1), (True, 2, 16, 32, 4, 0, 2), (True, 2, 32, 48, 4, 0, 2),
           (False, 3, 48, 96, 4, 0.25, 2), (False, 5, 96, 112, 6, 0.25, 1),
           (False, 8, 112, 192, 6, 0.25, 2)),
    "s": ((True, 2, 24, 24, 1, 0, 1), (True, 4, 24, 48, 4, 0, 2), (True, 4, 48, 64, 4, 0, 2),
          (False, 6, 64, 128, 4, 0.25, 2), (False, 9, 128, 160, 6, 0.25, 1),
          (False, 15, 160, 256, 6, 0.25, 2)),
}
TOP_FILTERS = 1280
DROP_CONNECT_RATE = 0.2
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-3  # Keras' bn_momentum for V2 (Flax's momentum is the same)
# Keras' B-variant `Normalization` constants, as the float32 tensors Keras makes of them.
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.maximum(np.sqrt(np.array([0.229 ** 2, 0.224 ** 2, 0.225 ** 2], np.float32)),
                  np.float32(1e-7))


@dataclasses.dataclass(frozen=True)
class Block:
  name: str          # Keras' layer prefix, e.g. 'block2a_'
  fused: bool
  in_filters: int
  out_filters: int
  expand: int
  se_ratio: float
  stride: int
  drop_rate: float   # Keras' stochastic-depth Dropout rate (0: no Dropout layer)

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.in_filters == self.out_filters

  def layer_names(self) -> list[str]:
    """The block's Keras layers that hold weights, in Keras' order."""
    names = [f"{self.name}expand_conv", f"{self.name}expand_bn"] if self.expand != 1 else []
    if not self.fused:
      names += [f"{self.name}dwconv2", f"{self.name}bn"]
    if self.se_ratio:
      names += [f"{self.name}se_reduce", f"{self.name}se_expand"]
    return names + [f"{self.name}project_conv", f"{self.name}project_bn"]


def blocks_of(variant: str) -> list[Block]:
  """Keras' block sequence: group i, repeat j is `block{i+1}{'abc...'[j]}_`; repeats after the
  first take the group's output width at stride 1."""
  groups = GROUPS[variant]
  total = sum(g[1] for g in groups)
  blocks = []
  for i, (fused, repeats, in_filters, out_filters, expand, se_ratio, stride) in enumerate(groups):
    for j in range(repeats):
      b = len(blocks)
      blocks.append(Block(f"block{i + 1}{chr(ord('a') + j)}_", fused,
                          in_filters if j == 0 else out_filters, out_filters, expand, se_ratio,
                          stride if j == 0 else 1, DROP_CONNECT_RATE * b / total))
  return blocks


def num_stages_of(variant: str) -> int:
  return len(blocks_of(variant)) + 2  # stem, one per block, top conv; 'predictions' is past them


def make_stage_of(variant: str):
  """stage_of for one variant: 0 = stem, b + 1 = block b, then top_conv/top_bn, predictions."""
  stages = {block.name[:-1]: b + 1 for b, block in enumerate(blocks_of(variant))}
  num_stages = num_stages_of(variant)

  def stage_of(layer_name: str) -> int:
    if layer_name in ("stem_conv", "stem_bn"):
      return 0
    if layer_name in ("top_conv", "top_bn"):
      return num_stages - 1
    if layer_name == "predictions":
      return num_stages
    prefix = layer_name.split("_", 1)[0]
    if prefix in stages:
      return stages[prefix]
    raise ValueError(f"not an EfficientNetV2-{variant.upper()} layer: {layer_name}")

  return stage_of


def keras_preprocessing(x, variant: str):
  """Keras' in-model Rescaling (+ Normalization for the B variants), in float32 as Keras runs it."""
  x = x.astype(jnp.float32)
  if variant.startswith("b"):
    return (x * np.float32(1.0 / 255) - _MEAN) / _STD  # Rescaling's offset 0 adds nothing
  return x * np.float32(1.0 / 128.0) + np.float32(-1.0)


def squeeze_excite(x, block: Block, dtype):
  """Keras' SE: global average pool, 1x1 conv + swish, 1x1 conv + sigmoid, scale the input."""
  filters_se = max(1, int(block.in_filters * block.se_ratio))
  se = x.astype(jnp.float32).mean(axis=(1, 2), keepdims=True).astype(dtype)
  se = nn.swish(Conv(filters_se, (1, 1), dtype=dtype, name=f"{block.name}se_reduce")(se))
  se = nn.sigmoid(Conv(x.shape[-1], (1, 1), dtype=dtype, name=f"{block.name}se_expand")(se))
  return x * se


def block_body(x, block: Block, bn, dtype):
  """A fused-MBConv or MBConv block up to its project BatchNorm (no residual). `bn(name, y,
  swish)` is the BatchNorm (+ swish) of the block's stage."""
  p, filters = block.name, block.in_filters * block.expand
  stride = (block.stride, block.stride)
  if block.expand != 1:
    kernel, expand_stride = ((3, 3), stride) if block.fused else ((1, 1), (1, 1))
    x = Conv(filters, kernel, expand_stride, "SAME", use_bias=False, dtype=dtype,
             name=f"{p}expand_conv")(x)
    x = bn(f"{p}expand_bn", x, True)
  if not block.fused:
    x = DepthwiseConv((3, 3), stride, "SAME", dtype=dtype, name=f"{p}dwconv2")(x)
    x = bn(f"{p}bn", x, True)
  if block.se_ratio:
    x = squeeze_excite(x, block, dtype)
  # A fused block without expansion does its 3x3 strided conv here, followed by swish.
  full = block.fused and block.expand == 1
  x = Conv(block.out_filters, (3, 3) if full else (1, 1), stride if full else (1, 1), "SAME",
           use_bias=False, dtype=dtype, name=f"{p}project_conv")(x)
  return bn(f"{p}project_bn", x, full)


class EfficientNetV2(nn.Module):
  """Feature extractor on 0..255 inputs ('raw' preprocessing); returns the top_activation map
  (N, h, w, 1280), or logits with `include_top` (Keras' top dropout is an inference no-op).

  Stages below `trainable_from` use moving BN statistics, get no gradient and skip stochastic
  depth. Training with stochastic depth needs a 'dropout' rng. `alpha` is accepted for a uniform
  build signature and ignored.
  """
  variant: str = "b0"  # 'b0' | 's'
  alpha: float = 1.0
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    num_stages = num_stages_of(self.variant)

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    def bn_at(stage):
      def bn(name, y, swish):
        y = keras_bn(name, y, train=train, frozen=stage < trainable_from, dtype=self.dtype,
                     momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
        return nn.swish(y) if swish else y
      return bn

    def drop_path(y, rate, stage):
      """Keras' Dropout(rate, noise_shape=(N, 1, 1, 1)): whole samples zeroed, the rest / keep."""
      if not train or stage < trainable_from or rate == 0:
        return y
      keep = 1.0 - rate
      mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0], 1, 1, 1))
      return jnp.where(mask, y / keep, jnp.zeros_like(y))

    x = freeze_below(keras_preprocessing(x, self.variant), 0)
    stem = GROUPS[self.variant][0][2]
    x = Conv(stem, (3, 3), (2, 2), "SAME", use_bias=False, dtype=self.dtype, name="stem_conv")(x)
    x = bn_at(0)("stem_bn", x, True)
    for stage, block in enumerate(blocks_of(self.variant), start=1):
      x = freeze_below(x, stage)
      y = block_body(x, block, bn_at(stage), self.dtype)
      x = drop_path(y, block.drop_rate, stage) + x if block.residual else y

    x = freeze_below(x, num_stages - 1)
    x = Conv(TOP_FILTERS, (1, 1), use_bias=False, dtype=self.dtype, name="top_conv")(x)
    x = bn_at(num_stages - 1)("top_bn", x, True)
    x = freeze_below(x, num_stages)
    if self.include_top:  # logits; Keras applies softmax inside 'predictions'
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x


def layer_names(variant: str) -> list[str]:
  """Every Keras layer with weights below the top, in Keras' order."""
  names = ["stem_conv", "stem_bn"]
  for block in blocks_of(variant):
    names += block.layer_names()
  return names + ["top_conv", "top_bn"]


def make_convert(variant: str):
  """Keras HDF5 layers (with or without 'predictions') -> Flax variables; names are Keras'."""
  required = layer_names(variant)
  depthwise = [n for n in required if n.endswith("_dwconv2")]

  def convert_keras(layers: dict[str, dict[str, np.ndarray]]) -> dict:
    return convert_keras_layers(layers, required, ["predictions"], depthwise=depthwise,
                                model=f"EfficientNetV2-{variant.upper()}")

  return convert_keras


def _architecture(variant: str) -> Architecture:
  return Architecture(
      build=lambda **kw: EfficientNetV2(variant=variant, **kw),
      num_stages=num_stages_of(variant), stage_of=make_stage_of(variant), preprocessing="raw",
      weight_format="keras_h5", convert=make_convert(variant))


ARCHITECTURES = {"efficientnet_v2_b0": _architecture("b0"), "efficientnet_v2_s": _architecture("s")}
