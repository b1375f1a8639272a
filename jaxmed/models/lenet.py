"""A small LeNet-style CNN trained from scratch: the no-transfer baseline.

Each block is conv 3x3 -> BatchNorm -> ReLU -> 2x2 max pool; widths 32/64/128 by default. There are
no pretrained weights (`convert=None`, weight_format 'none') and inputs are scaled to [0, 1].
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import Conv
from jaxmed.models.mobilenet_v1 import keras_bn
from jaxmed.ops.pooling import max_pool

WIDTHS = (32, 64, 128)


def stage_of(layer_name: str) -> int:
  """`block{b}_conv` / `block{b}_bn` -> b - 1; the optional 'predictions' layer -> len(WIDTHS)."""
  if layer_name == "predictions":
    return len(WIDTHS)
  if layer_name.startswith("block"):
    return int(layer_name[5:].split("_")[0]) - 1
  raise ValueError(f"not a LeNet layer: {layer_name}")


class LeNet(nn.Module):
  """Returns the last feature map (N, H/8, W/8, 128), or logits with `include_top` (global
  average pool + Dense 'predictions'). Same call signature and freezing semantics as the
  pretrained backbones; `alpha` is accepted for a uniform build signature and ignored."""
  alpha: float = 1.0
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000
  widths: Sequence[int] = WIDTHS

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    for stage, width in enumerate(self.widths):
      if stage == trainable_from:
        x = jax.lax.stop_gradient(x)
      x = Conv(width, (3, 3), padding="SAME", use_bias=False,
               dtype=self.dtype, name=f"block{stage + 1}_conv")(x)
      x = keras_bn(f"block{stage + 1}_bn", x, train=train, frozen=stage < trainable_from,
                   dtype=self.dtype, activation="relu")
      x = max_pool(x, (2, 2), (2, 2))
    if trainable_from == len(self.widths):
      x = jax.lax.stop_gradient(x)
    if self.include_top:
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x


ARCHITECTURES = {
    "lenet": Architecture(
        build=lambda **kw: LeNet(**kw), num_stages=len(WIDTHS), stage_of=stage_of,
        preprocessing="unit", weight_format="none", convert=None),
}
