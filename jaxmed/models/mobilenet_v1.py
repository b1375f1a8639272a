"""MobileNet v1 (Howard et al. 2017) with Keras Applications' layer names and padding.

Layer names are Keras' (`conv1`, `conv1_bn`, `conv_dw_1`, `conv_pw_1_bn`, ..., `conv_preds`) so a
Keras HDF5 weight file maps one to one. Padding follows Keras exactly: the stem conv uses TF 'SAME',
stride-2 depthwise convs use ZeroPadding2D((0, 1), (0, 1)) + 'VALID' (the two differ on odd sizes).

`convert_keras_layers` here is the generic Keras -> Flax mapping that vgg.py and xception.py reuse.
"""

from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import BatchNorm, Conv, DepthwiseConv, same_padding

# (pointwise filters at alpha 1, depthwise stride) of blocks 1..13 (Keras' `_depthwise_conv_block`).
BLOCK_SPEC = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
              (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
NUM_STAGES = 14  # stem + 13 depthwise-separable blocks; the top ('conv_preds') is stage 14
_BN_NAMES = {"gamma": "scale", "beta": "bias", "moving_mean": "mean", "moving_variance": "var"}


def stage_of(layer_name: str) -> int:
  """0 = stem (`conv1*`), i = block i (`conv_dw_i*`, `conv_pw_i*`), 14 = `conv_preds`."""
  if layer_name.startswith("conv1"):
    return 0
  if layer_name.startswith(("conv_dw_", "conv_pw_")):
    return int(layer_name.split("_")[2])
  if layer_name == "conv_preds":
    return NUM_STAGES
  raise ValueError(f"not a MobileNet layer: {layer_name}")


def keras_bn(name, x, *, train: bool, frozen: bool, dtype, momentum=0.99, epsilon=1e-3,
             activation=None):
  """Keras BatchNormalization (+ the activation after it): batch statistics only when training
  an unfrozen stage."""
  return BatchNorm(use_running_average=frozen or not train, momentum=momentum, epsilon=epsilon,
                   activation=activation, dtype=dtype, name=name)(x)


def convert_keras_layers(layers: dict[str, dict[str, np.ndarray]], required: Iterable[str],
                         optional: Iterable[str] = (), renames: dict[str, str] | None = None,
                         model: str = "model", depthwise: Iterable[str] = ()) -> dict:
  """Keras {layer: {weight: array}} -> Flax {'params', 'batch_stats'}.

  Weightless layers are ignored. BatchNormalization weights become scale/bias/mean/var; every other
  weight keeps its Keras name (kernel, bias, depthwise_kernel, pointwise_kernel), as in layers.py.
  `renames` maps file layer names to module names. All `required` layers must be present, plus
  either all or none of `optional` (the classifier top); anything else is an error.
  `depthwise` layers are DepthwiseConv2D: Keras 2 files name their kernel 'depthwise_kernel',
  Keras 3 (`w.path`) 'kernel'; both become 'depthwise_kernel'.
  """
  renames = renames or {}
  present = {renames.get(name, name): weights for name, weights in layers.items() if weights}
  required, optional = list(required), list(optional)
  missing = [n for n in required if n not in present]
  top = [n for n in optional if n in present]
  if top and len(top) != len(optional):
    missing += [n for n in optional if n not in present]
  unexpected = [n for n in present if n not in required and n not in optional]
  if missing or unexpected:
    raise ValueError(f"Keras weights do not match {model}: missing layers {missing}, "
                     f"unexpected layers {unexpected}")
  params, batch_stats = {}, {}
  depthwise = set(depthwise)
  for name in required + top:
    weights = present[name]
    if "moving_mean" in weights:
      bn = {_BN_NAMES[k]: jnp.asarray(v) for k, v in weights.items()}
      params[name] = {"scale": bn["scale"], "bias": bn["bias"]}
      batch_stats[name] = {"mean": bn["mean"], "var": bn["var"]}
    else:
      rename = {"kernel": "depthwise_kernel"} if name in depthwise else {}
      params[name] = {rename.get(k, k): jnp.asarray(v) for k, v in weights.items()}
  return {"params": params, "batch_stats": batch_stats}


class MobileNetV1(nn.Module):
  """Feature extractor; returns the last feature map (N, h, w, int(1024 * alpha)), or logits.

  Stages below `trainable_from` use moving BN statistics and get no gradient (stop_gradient at the
  boundary), Keras `trainable=False` semantics. The top is Keras': global average pool -> 1x1 conv
  'conv_preds' -> reshape (Keras' Dropout before it is dropped: it only matters when training the
  ImageNet top, which jaxmed replaces with its own Head).
  """
  alpha: float = 1.0
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    def bn(name, y, stage):  # always followed by ReLU6 in MobileNet
      return keras_bn(name, y, train=train, frozen=stage < trainable_from, dtype=self.dtype,
                      activation="relu6")

    x = freeze_below(x, 0)
    p = (same_padding(x.shape[1], 3, 2), same_padding(x.shape[2], 3, 2))
    x = Conv(int(32 * self.alpha), (3, 3), (2, 2), p, use_bias=False, dtype=self.dtype,
             name="conv1")(x)
    x = bn("conv1_bn", x, 0)
    for block, (filters, stride) in enumerate(BLOCK_SPEC, start=1):
      x = freeze_below(x, block)
      pad = ((1, 1), (1, 1)) if stride == 1 else ((0, 1), (0, 1))  # Keras' ZeroPadding2D + VALID
      x = DepthwiseConv((3, 3), (stride, stride), pad, dtype=self.dtype,
                        name=f"conv_dw_{block}")(x)
      x = bn(f"conv_dw_{block}_bn", x, block)
      x = Conv(int(filters * self.alpha), (1, 1), use_bias=False, dtype=self.dtype,
               name=f"conv_pw_{block}")(x)
      x = bn(f"conv_pw_{block}_bn", x, block)
    x = freeze_below(x, NUM_STAGES)
    if self.include_top:  # logits; Keras applies softmax in an Activation layer after the reshape
      x = x.astype(jnp.float32).mean(axis=(1, 2), keepdims=True)
      x = Conv(self.num_classes, (1, 1), dtype=jnp.float32, name="conv_preds")(x)
      x = x.reshape(x.shape[0], self.num_classes)
    return x


REQUIRED = ["conv1", "conv1_bn"] + [f"conv_{kind}_{i}{bn}" for i in range(1, 14)
                                    for kind in ("dw", "pw") for bn in ("", "_bn")]


def convert_keras(layers: dict[str, dict[str, np.ndarray]]) -> dict:
  """Keras MobileNet HDF5 layers (any alpha, with or without top) -> Flax variables."""
  return convert_keras_layers(layers, REQUIRED, ["conv_preds"], model="MobileNet",
                              depthwise=[f"conv_dw_{i}" for i in range(1, 14)])


ARCHITECTURES = {
    "mobilenet": Architecture(
        build=lambda **kw: MobileNetV1(**kw), num_stages=NUM_STAGES, stage_of=stage_of,
        preprocessing="tf", weight_format="keras_h5", convert=convert_keras),
}
