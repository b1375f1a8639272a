"""MobileNetV2 (Sandler et al. 2018) with Keras Applications' layer names.

Two variants share this code: Keras' (`mobilenet_v2`: TF 'SAME' padding, BatchNorm eps 1e-3) and
torchvision's (`torchvision/mobilenet_v2`: symmetric padding 1, eps 1e-5). The layer names match
Keras' so a Keras weight file maps one to one; torchvision keys are renamed in the converter.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import Conv, DepthwiseConv, relu6, same_padding

# (expansion t, output channels c, repeats n, first stride s), the paper's Table 2.
BLOCK_SPEC = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))
NUM_STAGES = 19  # stem, 17 inverted-residual blocks, final 1x1 conv: the units of partial unfreezing


def make_divisible(v: float, divisor: int = 8) -> int:
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


def stage_of(layer_name: str) -> int:
  """Stage index (0 = stem ... 18 = last conv) of a Keras-named layer, for freezing the bottom N."""
  if layer_name in ("Conv1", "bn_Conv1"):
    return 0
  if layer_name.startswith("expanded_conv_"):
    return 1
  if layer_name.startswith("block_"):
    return int(layer_name.split("_")[1]) + 1
  if layer_name.startswith("Conv_1"):
    return NUM_STAGES - 1
  raise ValueError(f"not a MobileNetV2 layer: {layer_name}")


class MobileNetV2(nn.Module):
  """Feature extractor; returns the last feature map (N, h, w, C) (C = 1280 for alpha <= 1).

  `train` puts BatchNorm of trainable stages in batch-statistics mode. Stages below
  `trainable_from` always use their moving statistics (Keras `trainable=False` semantics), and
  no gradient flows into them: a stop_gradient at the boundary skips their backward pass.
  """
  alpha: float = 1.0
  variant: str = "keras"  # 'keras' | 'torchvision'
  dtype: Any = jnp.float32
  include_top: bool = False  # ImageNet classifier: global average pool + Dense 'predictions'
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    torch = self.variant == "torchvision"
    eps, momentum = (1e-5, 0.9) if torch else (1e-3, 0.999)

    def pad(size, stride):
      if torch:
        return (1, 1)
      return same_padding(size, 3, stride)

    def bn(name, y, stage):
      return nn.BatchNorm(use_running_average=not (train and stage >= trainable_from),
                          momentum=momentum, epsilon=eps, dtype=self.dtype, name=name)(y)

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    stem = make_divisible(32 * self.alpha)
    x = freeze_below(x, 0)
    p = (pad(x.shape[1], 2), pad(x.shape[2], 2))
    x = Conv(stem, (3, 3), (2, 2), p, use_bias=False, dtype=self.dtype, name="Conv1")(x)
    x = relu6(bn("bn_Conv1", x, 0))

    block_id = 0
    for t, c, n, s in BLOCK_SPEC:
      out = make_divisible(c * self.alpha) if torch else make_divisible(int(c * self.alpha))
      for i in range(n):
        stage = block_id + 1
        x = freeze_below(x, stage)
        stride = s if i == 0 else 1
        prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
        inputs = x
        if block_id:
          x = Conv(t * x.shape[-1], (1, 1), use_bias=False, dtype=self.dtype,
                   name=prefix + "expand")(x)
          x = relu6(bn(prefix + "expand_BN", x, stage))
        p = (pad(x.shape[1], stride), pad(x.shape[2], stride))
        x = DepthwiseConv((3, 3), (stride, stride), p, dtype=self.dtype,
                          name=prefix + "depthwise")(x)
        x = relu6(bn(prefix + "depthwise_BN", x, stage))
        x = Conv(out, (1, 1), use_bias=False, dtype=self.dtype, name=prefix + "project")(x)
        x = bn(prefix + "project_BN", x, stage)
        if stride == 1 and inputs.shape[-1] == out:
          x = x + inputs
        block_id += 1

    last = make_divisible(1280 * max(1.0, self.alpha)) if torch else (
        make_divisible(1280 * self.alpha) if self.alpha > 1.0 else 1280)
    x = freeze_below(x, NUM_STAGES - 1)
    x = Conv(last, (1, 1), use_bias=False, dtype=self.dtype, name="Conv_1")(x)
    x = relu6(bn("Conv_1_bn", x, NUM_STAGES - 1))
    x = freeze_below(x, NUM_STAGES)
    if self.include_top:  # logits; Keras applies softmax inside 'predictions'
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x


ARCHITECTURES = {
    "mobilenet_v2": Architecture(
        lambda **kw: MobileNetV2(variant="keras", **kw), NUM_STAGES, stage_of, "tf", "keras_h5"),
    "torchvision/mobilenet_v2": Architecture(
        lambda **kw: MobileNetV2(variant="torchvision", **kw), NUM_STAGES, stage_of, "torch",
        "torch"),
}
