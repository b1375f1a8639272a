"""MobileNetV2 (Sandler et al. 2018) with Keras Applications' layer names.

Two variants share this code: Keras' (`mobilenet_v2`: TF 'SAME' padding, BatchNorm eps 1e-3) and
torchvision's (`torchvision/mobilenet_v2`: symmetric padding 1, eps 1e-5). The layer names match
Keras' so a Keras weight file maps one to one; torchvision keys are renamed in the converter.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import BatchNorm, Conv, DepthwiseConv, same_padding
from jaxmed.weights.convert import (keras_layers_to_variables, torch_bn, torch_conv, torch_depthwise,
                                    torch_linear)

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

    def bn(name, y, stage, activation=None):
      return BatchNorm(use_running_average=not (train and stage >= trainable_from),
                       momentum=momentum, epsilon=eps, activation=activation, dtype=self.dtype,
                       name=name)(y)

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    stem = make_divisible(32 * self.alpha)
    x = freeze_below(x, 0)
    p = (pad(x.shape[1], 2), pad(x.shape[2], 2))
    x = Conv(stem, (3, 3), (2, 2), p, use_bias=False, dtype=self.dtype, name="Conv1")(x)
    x = bn("bn_Conv1", x, 0, "relu6")

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
          x = bn(prefix + "expand_BN", x, stage, "relu6")
        p = (pad(x.shape[1], stride), pad(x.shape[2], stride))
        x = DepthwiseConv((3, 3), (stride, stride), p, dtype=self.dtype,
                          name=prefix + "depthwise")(x)
        x = bn(prefix + "depthwise_BN", x, stage, "relu6")
        x = Conv(out, (1, 1), use_bias=False, dtype=self.dtype, name=prefix + "project")(x)
        x = bn(prefix + "project_BN", x, stage)
        if stride == 1 and inputs.shape[-1] == out:
          x = x + inputs
        block_id += 1

    last = make_divisible(1280 * max(1.0, self.alpha)) if torch else (
        make_divisible(1280 * self.alpha) if self.alpha > 1.0 else 1280)
    x = freeze_below(x, NUM_STAGES - 1)
    x = Conv(last, (1, 1), use_bias=False, dtype=self.dtype, name="Conv_1")(x)
    x = bn("Conv_1_bn", x, NUM_STAGES - 1, "relu6")
    x = freeze_below(x, NUM_STAGES)
    if self.include_top:  # logits; Keras applies softmax inside 'predictions'
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x


def convert_keras(layers: dict) -> dict:
  """Keras HDF5 layers -> variables: the Flax names are Keras' own."""
  return keras_layers_to_variables(layers)


def convert_torch(state: dict) -> dict:
  """torchvision `mobilenet_v2` state_dict -> variables with Keras' layer names."""
  params, stats = {}, {}

  def conv(name, key, depthwise=False):
    w = state[key + ".weight"]
    params[name] = {"depthwise_kernel" if depthwise else "kernel":
                    torch_depthwise(w) if depthwise else torch_conv(w)}

  def bn(name, key):
    params[name], stats[name] = torch_bn(state, key)

  conv("Conv1", "features.0.0"), bn("bn_Conv1", "features.0.1")
  conv("expanded_conv_depthwise", "features.1.conv.0.0", True)
  bn("expanded_conv_depthwise_BN", "features.1.conv.0.1")
  conv("expanded_conv_project", "features.1.conv.1"), bn("expanded_conv_project_BN", "features.1.conv.2")
  for k in range(2, 18):
    p, f = f"block_{k - 1}_", f"features.{k}.conv"
    conv(p + "expand", f + ".0.0"), bn(p + "expand_BN", f + ".0.1")
    conv(p + "depthwise", f + ".1.0", True), bn(p + "depthwise_BN", f + ".1.1")
    conv(p + "project", f + ".2"), bn(p + "project_BN", f + ".3")
  conv("Conv_1", "features.18.0"), bn("Conv_1_bn", "features.18.1")
  if "classifier.1.weight" in state:
    params["predictions"] = {"kernel": torch_linear(state["classifier.1.weight"]),
                             "bias": np.asarray(state["classifier.1.bias"], np.float32)}
  return {"params": params, "batch_stats": stats}


ARCHITECTURES = {
    "mobilenet_v2": Architecture(
        lambda **kw: MobileNetV2(variant="keras", **kw), NUM_STAGES, stage_of, "tf", "keras_h5",
        convert_keras),
    "torchvision/mobilenet_v2": Architecture(
        lambda **kw: MobileNetV2(variant="torchvision", **kw), NUM_STAGES, stage_of, "torch",
        "torch", convert_torch),
}
