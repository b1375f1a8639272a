"""ConvNeXt-Tiny (Liu et al. 2022) as Keras Applications' `ConvNeXtTiny`, with its layer names.

Keras quirks reproduced here:
- The model normalises its own 0..255 input (a `Normalization` layer with ImageNet mean and
  variance in 0..255 units: (x - mean) / max(sqrt(var), 1e-7)), so the preprocessing is 'raw'.
- The stem (4x4/4 conv + LayerNorm) and each downsampling layer (LayerNorm + 2x2/2 conv) are
  Keras `Sequential`s: a weight file holds each as one layer group with short names kernel, bias,
  gamma, beta. Here they are two modules each, named after the Sequential's inner layers.
- The 7x7 depthwise conv is a grouped `Conv2D` (kernel (7, 7, 1, C), with bias); the pointwise
  convs are `Dense` layers on NHWC maps; GELU is the exact erf form; LayerNorm eps is 1e-6.
- `LayerScale` has one unnamed weight (Keras 3 writes 'variable_N'), read here as 'gamma'.
- `include_top=False` is not the last block's map: Keras adds a LayerNormalization with an
  auto-generated name ('layer_normalization') on the map itself. With the top, a LayerNorm
  ('convnext_tiny_head_layernorm') follows the global average pool instead. Both normalise the
  final features of the same ported network, so here they are one set of weights under the head
  name: a file with or without the top loads into a backbone with or without it.
Stochastic depth is left out: Keras' ConvNeXtTiny uses rate 0 (and it is an identity at inference).
"""

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.ops.conv import conv2d
from jaxmed.weights.convert import check_complete

PREFIX = "convnext_tiny"
DEPTHS = (3, 3, 9, 3)
WIDTHS = (96, 192, 384, 768)
NUM_STAGES = 1 + sum(DEPTHS)  # stem, then one per block (a downsampling layer goes with the next)
EPSILON = 1e-6
HEAD_NORM = f"{PREFIX}_head_layernorm"
# Keras' PreStem: ImageNet mean/variance scaled to 0..255, as float32 constants like Keras'.
_MEAN = np.array([0.485 * 255, 0.456 * 255, 0.406 * 255], np.float32)
_VARIANCE = np.array([(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2], np.float32)
_KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), Normalization's floor on the std
_BLOCK = re.compile(rf"{PREFIX}_stage_(\d)_block_(\d+)_")
_DOWNSAMPLE = re.compile(rf"{PREFIX}_downsampling_(?:block|layernorm|conv)_(\d)$")


def _first_stage_of_block(stage: int, block: int) -> int:
  return 1 + sum(DEPTHS[:stage]) + block


def stage_of(layer_name: str) -> int:
  """0 = stem, 1..18 = blocks (downsampling layers with the block after them), 18 also the final
  LayerNorm (part of the `include_top=False` backbone), 19 = 'predictions'."""
  if layer_name.startswith(f"{PREFIX}_stem"):
    return 0
  if m := _BLOCK.match(layer_name):
    return _first_stage_of_block(int(m[1]), int(m[2]))
  if m := _DOWNSAMPLE.match(layer_name):
    return _first_stage_of_block(int(m[1]) + 1, 0)
  if layer_name == HEAD_NORM:
    return NUM_STAGES - 1
  if layer_name in ("predictions", f"{PREFIX}_head_dense"):
    return NUM_STAGES
  raise ValueError(f"not a ConvNeXt-Tiny layer: {layer_name}")


class LayerNorm(nn.Module):
  """Keras LayerNormalization over channels, in Keras' arithmetic (statistics in float32,
  x * (gamma * rsqrt(var + eps)) + (beta - mean * gamma * rsqrt(var + eps)))."""
  epsilon: float = EPSILON
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    x = x.astype(jnp.float32)
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    inv = jax.lax.rsqrt(var + self.epsilon) * scale
    return (x * inv + (bias - mean * inv)).astype(self.dtype)


class Conv(nn.Module):
  """Keras Conv2D with bias, 'valid' padding; `depthwise` = groups == channels (Keras' kernel
  shape (kh, kw, 1, C), passed to conv2d as the (kh, kw, C, 1) it expects, with 'same' padding)."""
  features: int
  kernel_size: int
  strides: int = 1
  depthwise: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, c = self.kernel_size, x.shape[-1]
    shape = (k, k, 1, c) if self.depthwise else (k, k, c, self.features)
    kernel = self.param("kernel", nn.initializers.he_normal(), shape).astype(self.dtype)
    if self.depthwise:  # odd k, stride 1: 'same' pads (k - 1) // 2 on every side
      kernel, padding, groups = kernel.reshape(k, k, c, 1), "SAME", c
    else:
      padding, groups = "VALID", 1
    y = conv2d(x.astype(self.dtype), kernel, (self.strides,) * 2, padding,
               feature_group_count=groups)
    return y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)


class Pointwise(nn.Module):
  """Keras Dense on an NHWC map (kernel (C, D), bias): a 1x1 conv, so it runs as conv2d's."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype)[None, None], (1, 1), "VALID")
    return y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)


class LayerScale(nn.Module):
  """Keras' LayerScale: a learned per-channel factor 'gamma' (initialised to 1e-6)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    gamma = self.param("gamma", nn.initializers.constant(1e-6), (x.shape[-1],))
    return x * gamma.astype(self.dtype)


def _block(x, width: int, prefix: str, dtype):
  """x + gamma * pw2(gelu(pw1(LN(dw7x7(x))))). A function, not a module, so its layers sit at
  the top level under Keras' names (modules made here belong to the caller)."""
  y = Conv(width, 7, depthwise=True, dtype=dtype, name=f"{prefix}depthwise_conv")(x)
  y = LayerNorm(dtype=dtype, name=f"{prefix}layernorm")(y)
  y = Pointwise(4 * width, dtype=dtype, name=f"{prefix}pointwise_conv_1")(y)
  y = jax.nn.gelu(y, approximate=False)
  y = Pointwise(width, dtype=dtype, name=f"{prefix}pointwise_conv_2")(y)
  return x + LayerScale(dtype=dtype, name=f"{prefix}layer_scale")(y)


class ConvNeXtTiny(nn.Module):
  """Input 0..255 RGB (preprocessing 'raw'); returns the final LayerNorm of the last map (N, h, w,
  768), Keras' `include_top=False` output, or logits (pool -> head LayerNorm -> 'predictions').

  There is no BatchNorm, so `train` changes nothing; stages below `trainable_from` get no gradient
  (stop_gradient at the boundary).
  """
  alpha: float = 1.0  # unused: one width only
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    del train
    dt = self.dtype

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    # Keras' Normalization: a divide by max(sqrt(var), eps), not a multiply by its inverse.
    std = np.maximum(np.sqrt(_VARIANCE), np.float32(_KERAS_EPSILON))
    x = ((x.astype(jnp.float32) - _MEAN) / std).astype(dt)
    x = freeze_below(x, 0)
    x = Conv(WIDTHS[0], 4, 4, dtype=dt, name=f"{PREFIX}_stem_conv")(x)
    x = LayerNorm(dtype=dt, name=f"{PREFIX}_stem_layernorm")(x)
    for stage, (depth, width) in enumerate(zip(DEPTHS, WIDTHS)):
      for block in range(depth):
        x = freeze_below(x, _first_stage_of_block(stage, block))
        if stage and not block:
          x = LayerNorm(dtype=dt, name=f"{PREFIX}_downsampling_layernorm_{stage - 1}")(x)
          x = Conv(width, 2, 2, dtype=dt, name=f"{PREFIX}_downsampling_conv_{stage - 1}")(x)
        x = _block(x, width, f"{PREFIX}_stage_{stage}_block_{block}_", dt)
    if self.include_top:  # logits; Keras applies softmax inside its head Dense
      x = LayerNorm(dtype=jnp.float32, name=HEAD_NORM)(x.astype(jnp.float32).mean(axis=(1, 2)))
      x = freeze_below(x, NUM_STAGES)
      return nn.Dense(self.num_classes, name="predictions")(x)
    x = LayerNorm(dtype=dt, name=HEAD_NORM)(x)
    return freeze_below(x, NUM_STAGES)


_LN = {"gamma": "scale", "beta": "bias"}  # Keras LayerNormalization -> Flax-style names
_AUTO_LN = re.compile(r"layer_normalization(_\d+)?$")  # the include_top=False final LayerNorm


def _split_sequential(name: str, weights: dict) -> dict[str, dict]:
  """A stem/downsampling Sequential group -> its conv and LayerNorm layers (Keras' inner names)."""
  if name == f"{PREFIX}_stem":
    conv, norm = f"{PREFIX}_stem_conv", f"{PREFIX}_stem_layernorm"
  else:
    i = name.rsplit("_", 1)[1]
    conv, norm = f"{PREFIX}_downsampling_conv_{i}", f"{PREFIX}_downsampling_layernorm_{i}"
  if set(weights) != {"kernel", "bias", "gamma", "beta"}:
    raise ValueError(f"Keras layer {name!r}: expected kernel, bias, gamma, beta; "
                     f"got {sorted(weights)}")
  return {conv: {"kernel": weights["kernel"], "bias": weights["bias"]},
          norm: {_LN[k]: weights[k] for k in ("gamma", "beta")}}


def _rename(name: str, weights: dict) -> dict[str, dict]:
  """One Keras layer -> {Flax layer: {Flax weight: array}}; ValueError for anything unknown."""
  if name == f"{PREFIX}_stem" or re.fullmatch(rf"{PREFIX}_downsampling_block_\d", name):
    return _split_sequential(name, weights)
  if name == f"{PREFIX}_head_dense":
    return {"predictions": dict(weights)}
  if _AUTO_LN.match(name):
    name = HEAD_NORM
  if name == HEAD_NORM or _BLOCK.match(name) and name.endswith("_layernorm"):
    if set(weights) != set(_LN):
      raise ValueError(f"Keras LayerNormalization {name!r}: expected gamma, beta; "
                       f"got {sorted(weights)}")
    return {name: {_LN[k]: v for k, v in weights.items()}}
  if _BLOCK.match(name) and name.endswith("_layer_scale"):
    if len(weights) != 1:  # one weight, whatever its name ('variable_7' in Keras 3)
      raise ValueError(f"Keras LayerScale {name!r}: expected one weight, got {sorted(weights)}")
    return {name: {"gamma": next(iter(weights.values()))}}
  if _BLOCK.match(name) and name.endswith(("_depthwise_conv", "_pointwise_conv_1",
                                           "_pointwise_conv_2")):
    return {name: dict(weights)}
  raise ValueError(f"unexpected layer {name!r} in ConvNeXt-Tiny Keras weights")


def convert_keras(layers: dict[str, dict[str, np.ndarray]]) -> dict:
  """Keras ConvNeXtTiny HDF5 layers (with or without the top) -> {'params', 'batch_stats'};
  names and shapes are checked against the module's own variables."""
  params = {}
  for name, weights in layers.items():
    if not weights:
      continue
    for flax_name, arrays in _rename(name, weights).items():
      if flax_name in params:  # e.g. both the head LayerNorm and an include_top=False one
        raise ValueError(f"ConvNeXt-Tiny Keras weights: two layers map to {flax_name!r}")
      params[flax_name] = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
  top = "predictions" in params
  classes = params["predictions"]["kernel"].shape[-1] if top else 1000
  model = ConvNeXtTiny(include_top=top, num_classes=classes)
  expected = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  converted = {"params": params, "batch_stats": {}}
  check_complete(converted, dict(expected), "ConvNeXt-Tiny Keras weights")
  return converted


ARCHITECTURES = {
    "convnext_tiny": Architecture(
        build=lambda **kw: ConvNeXtTiny(**kw), num_stages=NUM_STAGES, stage_of=stage_of,
        preprocessing="raw", weight_format="keras_h5", convert=convert_keras),
}
