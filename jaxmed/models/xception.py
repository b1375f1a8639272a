"""Xception (Chollet 2017) with Keras Applications' layer names.

Keras names every layer (`block1_conv1`, `block2_sepconv1_bn`, ...) except the four 1x1 residual
projections and their BatchNorms (blocks 2, 3, 4, 13), which get auto-generated names (`conv2d`,
`batch_normalization_3`, ...) that depend on how many layers the Keras session had created before.
Here they are `block{b}_residual` / `block{b}_residual_bn`, and the converter assigns the file's
unnamed convs and BatchNorms to them by order of appearance (a Keras file lists layers in graph
order, and each projection depends on the previous one), checking their channel counts.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import Conv, same_padding
from jaxmed.models.mobilenet_v1 import convert_keras_layers, keras_bn
from jaxmed.ops.conv import conv2d
from jaxmed.ops.pooling import max_pool

NUM_STAGES = 14  # blocks 1..14 -> stages 0..13; the top ('predictions') is stage 14
MIN_SIZE = 71    # Keras' minimum input size
# block -> (channels of each separable conv, residual projection channels or None = identity).
BLOCKS = {2: ((128, 128), 128), 3: ((256, 256), 256), 4: ((728, 728), 728),
          **{b: ((728, 728, 728), None) for b in range(5, 13)},
          13: ((728, 1024), 1024), 14: ((1536, 2048), None)}
RESIDUAL_BLOCKS = [b for b, (_, res) in BLOCKS.items() if res]


def stage_of(layer_name: str) -> int:
  if layer_name == "predictions":
    return NUM_STAGES
  if layer_name.startswith("block"):
    return int(layer_name[5:].split("_")[0]) - 1
  raise ValueError(f"not an Xception layer: {layer_name}")


class SeparableConv(nn.Module):
  """Keras SeparableConv2D (depth_multiplier 1, no bias): a depthwise then a 1x1 conv, both through
  `ops.conv2d`, with Keras' parameter names 'depthwise_kernel' (kh, kw, C, 1) and 'pointwise_kernel'
  (1, 1, C, features)."""
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    c = x.shape[-1]
    dw = self.param("depthwise_kernel", nn.initializers.he_normal(), (kh, kw, c, 1))
    pw = self.param("pointwise_kernel", nn.initializers.he_normal(), (1, 1, c, self.features))
    pad = (same_padding(x.shape[1], kh, 1), same_padding(x.shape[2], kw, 1))
    x = conv2d(x.astype(self.dtype), dw.astype(self.dtype), (1, 1), pad, feature_group_count=c)
    return conv2d(x, pw.astype(self.dtype), (1, 1), "VALID")


class Xception(nn.Module):
  """Feature extractor; returns the block14 map (N, h, w, 2048), or logits with `include_top`.

  Inputs must be at least 71x71. Stages below `trainable_from` use moving BN statistics and get no
  gradient. `alpha` is accepted for a uniform build signature and ignored.
  """
  alpha: float = 1.0
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    if min(x.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"Xception needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, "
                       f"got {x.shape[1:3]}")

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    def bn(name, y, stage, activation=None):
      return keras_bn(name, y, train=train, frozen=stage < trainable_from, dtype=self.dtype,
                      activation=activation)

    x = freeze_below(x, 0)
    for i, (filters, stride) in enumerate(((32, 2), (64, 1)), start=1):
      x = Conv(filters, (3, 3), (stride, stride), "VALID", use_bias=False, dtype=self.dtype,
               name=f"block1_conv{i}")(x)
      x = bn(f"block1_conv{i}_bn", x, 0, "relu")

    for block, (widths, res_width) in BLOCKS.items():
      stage = block - 1
      x = freeze_below(x, stage)
      residual = x
      if res_width:
        pad = (same_padding(x.shape[1], 1, 2), same_padding(x.shape[2], 1, 2))
        residual = Conv(res_width, (1, 1), (2, 2), pad, use_bias=False, dtype=self.dtype,
                        name=f"block{block}_residual")(x)
        residual = bn(f"block{block}_residual_bn", residual, stage)
      for i, width in enumerate(widths, start=1):
        # Keras' relu comes before each separable conv, except block2's first (block1 ended in
        # one) and in block14, where it follows each BatchNorm instead.
        if block != 14 and (block != 2 or i > 1):
          x = nn.relu(x)
        x = SeparableConv(width, dtype=self.dtype, name=f"block{block}_sepconv{i}")(x)
        x = bn(f"block{block}_sepconv{i}_bn", x, stage, "relu" if block == 14 else None)
      if res_width:
        x = max_pool(x, (3, 3), (2, 2), "SAME")  # TF 'SAME' pooling ignores the padding
      if block != 14:
        x = x + residual

    x = freeze_below(x, NUM_STAGES)
    if self.include_top:  # logits; Keras applies softmax inside 'predictions'
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x


NAMED = ["block1_conv1", "block1_conv1_bn", "block1_conv2", "block1_conv2_bn"] + [
    f"block{b}_sepconv{i}{bn}" for b, (widths, _) in BLOCKS.items()
    for i in range(1, len(widths) + 1) for bn in ("", "_bn")]
RESIDUALS = [f"block{b}_residual{bn}" for b in RESIDUAL_BLOCKS for bn in ("", "_bn")]


def residual_renames(layers: dict[str, dict[str, np.ndarray]]) -> dict[str, str]:
  """File names of the auto-named residual convs/BatchNorms -> `block{b}_residual[_bn]`, by order.

  Returns {} when the file's unnamed layers are not exactly four 1x1 convs and four BatchNorms with
  the expected channel counts, so that the converter's error lists them as unexpected.
  """
  unnamed = [n for n, w in layers.items() if w and n not in NAMED and n != "predictions"]
  convs = [n for n in unnamed if set(layers[n]) == {"kernel"}]
  norms = [n for n in unnamed if "moving_mean" in layers[n]]
  widths = [BLOCKS[b][1] for b in RESIDUAL_BLOCKS]
  if ([layers[n]["kernel"].shape[-1] for n in convs] != widths
      or [layers[n]["moving_mean"].shape[0] for n in norms] != widths):
    return {}
  renames = {}
  for block, conv, norm in zip(RESIDUAL_BLOCKS, convs, norms):
    renames[conv], renames[norm] = f"block{block}_residual", f"block{block}_residual_bn"
  return renames


def convert_keras(layers: dict[str, dict[str, np.ndarray]]) -> dict:
  """Keras Xception HDF5 layers (with or without top) -> Flax variables."""
  return convert_keras_layers(layers, NAMED + RESIDUALS, ["predictions"],
                              renames=residual_renames(layers), model="Xception")


ARCHITECTURES = {
    "xception": Architecture(
        build=lambda **kw: Xception(**kw), num_stages=NUM_STAGES, stage_of=stage_of,
        preprocessing="tf", weight_format="keras_h5", convert=convert_keras, min_size=MIN_SIZE),
}
