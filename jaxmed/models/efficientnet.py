"""EfficientNet B0-B3 (Tan & Le 2019) with Keras Applications' layer names, and torchvision's B0.

Keras variants (`efficientnet_b0` ... `efficientnet_b3`) reproduce Keras' model exactly:
  * normalisation inside the model: Rescaling(1/255) then a Normalization layer whose mean and
    variance are in the weight file (here non-trainable 'batch_stats' under 'normalization'), so
    the input is raw 0..255 ('raw' preprocessing). See `normalization_stats` for the extra
    Rescaling that Keras adds only to ImageNet-weighted models.
  * stride-2 convs (stem, first depthwise of a stage) use Keras' `correct_pad` ZeroPadding2D +
    'VALID'; for a model built with a fixed input size that is TF 'SAME' padding, asymmetric on
    even sizes. (Keras built with input_shape (None, None, 3) pads odd sizes as even ones.)
  * BatchNorm eps 1e-3, momentum 0.99; swish = x * sigmoid(x); squeeze-excite on every block.
  * stochastic depth ("drop connect", rate 0.2 * block index / number of blocks) on identity
    residuals, one Bernoulli draw per sample, only when training a trainable stage.
torchvision's `efficientnet_b0` is the same graph with symmetric padding (k - 1) // 2, BatchNorm
eps 1e-5 / momentum 0.1 and ImageNet mean/std preprocessing outside; its state_dict keys are
mapped to the Keras names by `convert_torch`.

Stages for partial unfreezing: 0 = stem (normalization, stem_conv, stem_bn), then one per block
(block1a, block2a, block2b, ...), then top_conv/top_bn; 'predictions' is after them all.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import BatchNorm, Conv, DepthwiseConv, same_padding
from jaxmed.models.mobilenet_v1 import convert_keras_layers
from jaxmed.weights.convert import torch_conv, torch_depthwise, torch_linear

# Keras' DEFAULT_BLOCKS_ARGS: (kernel, repeats, filters_in, filters_out, expand_ratio, stride);
# se_ratio is 0.25 and id_skip True for all of them.
BLOCKS = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
          (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
# variant -> (width coefficient, depth coefficient), Keras' EfficientNetB0..B3.
SCALING = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4)}
DROP_CONNECT_RATE = 0.2
MIN_SIZE = 32  # Keras' obtain_input_shape(min_size=32)
# What the published Keras ImageNet files hold in their Normalization layer: the ImageNet mean and,
# as "variance", the standard deviations themselves (tensorflow issue 49930).
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STDDEV_RGB = np.array([0.229, 0.224, 0.225], np.float32)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Keras' round_filters: scale by width, round to a multiple of 8, never 10% below."""
  filters *= width
  new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
  return int(new + divisor if new < 0.9 * filters else new)


@functools.lru_cache(maxsize=None)
def block_specs(width: float, depth: float) -> tuple:
  """One (name prefix, kernel, stride, filters_in, filters_out, expand, drop rate) per block."""
  repeats = [int(math.ceil(depth * r)) for _, r, *_ in BLOCKS]
  total, specs = sum(repeats), []
  for i, ((kernel, _, f_in, f_out, expand, stride), n) in enumerate(zip(BLOCKS, repeats)):
    f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
    for j in range(n):
      rate = DROP_CONNECT_RATE * len(specs) / total  # Keras' per-block schedule
      specs.append((f"block{i + 1}{chr(97 + j)}_", kernel, stride if j == 0 else 1,
                    f_in if j == 0 else f_out, f_out, expand, rate))
  return tuple(specs)


def stage_of(layer_name: str, width: float, depth: float) -> int:
  """0 = stem, 1..N = blocks in order, N + 1 = top_conv/top_bn, N + 2 = 'predictions'."""
  specs = block_specs(width, depth)
  if layer_name in ("normalization", "stem_conv", "stem_bn"):
    return 0
  if layer_name in ("top_conv", "top_bn"):
    return len(specs) + 1
  if layer_name == "predictions":
    return len(specs) + 2
  for stage, spec in enumerate(specs, start=1):
    if layer_name.startswith(spec[0]):
      return stage
  raise ValueError(f"not an EfficientNet layer: {layer_name}")


def swish(x):
  return x * jax.nn.sigmoid(x)


class Normalization(nn.Module):
  """Keras' Rescaling(1/255) + Normalization: (x / 255 - mean) / max(sqrt(var), 1e-7).

  mean/var are fixed statistics of the weight file (never updated by training), kept in
  'batch_stats' so the optimiser does not see them; 'count' is not needed.
  """

  @nn.compact
  def __call__(self, x):
    mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((3,), jnp.float32)).value
    var = self.variable("batch_stats", "var", lambda: jnp.ones((3,), jnp.float32)).value
    x = x.astype(jnp.float32) * (1.0 / 255.0)
    return (x - mean) / jnp.maximum(jnp.sqrt(var), 1e-7)


class EfficientNet(nn.Module):
  """Feature extractor; returns the top_activation map (N, h, w, round_filters(1280)), or logits.

  Stages below `trainable_from` use moving BN statistics, get no gradient (stop_gradient at the
  boundary) and skip stochastic depth. Training a trainable stage draws stochastic-depth masks
  from the 'dropout' rng. `alpha` is accepted for a uniform build signature and ignored.
  """
  width: float = 1.0
  depth: float = 1.0
  variant: str = "keras"  # 'keras' | 'torchvision'
  alpha: float = 1.0
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    keras = self.variant == "keras"
    if keras and min(x.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"EfficientNet needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, "
                       f"got {x.shape[1:3]}")
    specs = block_specs(self.width, self.depth)
    eps, momentum = (1e-3, 0.99) if keras else (1e-5, 0.9)  # torch momentum 0.1 = Flax 0.9

    def pad(y, kernel, stride):  # Keras: 'same' / correct_pad (= TF SAME here); torch: symmetric
      if keras:
        return tuple(same_padding(n, kernel, stride) for n in y.shape[1:3])
      return ((kernel // 2, kernel // 2),) * 2

    def bn(name, y, stage, act=True):
      y = BatchNorm(use_running_average=not (train and stage >= trainable_from), momentum=momentum,
                    epsilon=eps, dtype=self.dtype, name=name)(y)
      return swish(y) if act else y

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    x = freeze_below(x, 0)
    if keras:
      x = Normalization(name="normalization")(x)
    x = Conv(round_filters(32, self.width), (3, 3), (2, 2), pad(x, 3, 2), use_bias=False,
             dtype=self.dtype, name="stem_conv")(x)
    x = bn("stem_bn", x, 0)
    for stage, spec in enumerate(specs, start=1):
      x = freeze_below(x, stage)
      x = self._block(x, spec, pad, functools.partial(bn, stage=stage),
                      drop=train and stage >= trainable_from)
    top = len(specs) + 1
    x = freeze_below(x, top)
    x = Conv(round_filters(1280, self.width), (1, 1), use_bias=False, dtype=self.dtype,
             name="top_conv")(x)
    x = bn("top_bn", x, top)
    x = freeze_below(x, top + 1)
    if self.include_top:  # logits; Keras' top_dropout is an inference no-op, softmax the caller's
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x

  def _block(self, x, spec, pad, bn, drop: bool):
    """Keras' `block`: expand 1x1 -> depthwise -> squeeze-excite -> project 1x1 (+ residual)."""
    name, kernel, stride, f_in, f_out, expand, rate = spec
    inputs, filters = x, f_in * expand
    if expand != 1:
      x = Conv(filters, (1, 1), use_bias=False, dtype=self.dtype, name=name + "expand_conv")(x)
      x = bn(name + "expand_bn", x)
    x = DepthwiseConv((kernel, kernel), (stride, stride), pad(x, kernel, stride),
                      dtype=self.dtype, name=name + "dwconv")(x)
    x = bn(name + "bn", x)
    se = x.astype(jnp.float32).mean(axis=(1, 2), keepdims=True).astype(self.dtype)
    squeeze = max(1, int(f_in * 0.25))  # se_ratio 0.25 of the block's input channels
    se = swish(Conv(squeeze, (1, 1), dtype=self.dtype, name=name + "se_reduce")(se))
    se = jax.nn.sigmoid(Conv(filters, (1, 1), dtype=self.dtype, name=name + "se_expand")(se))
    x = Conv(f_out, (1, 1), use_bias=False, dtype=self.dtype, name=name + "project_conv")(x * se)
    x = bn(name + "project_bn", x, act=False)
    if stride != 1 or f_in != f_out:
      return x
    if drop and rate > 0:  # Keras Dropout(rate, noise_shape=(None, 1, 1, 1)): drop whole samples
      keep = 1.0 - rate
      mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
      x = jnp.where(mask, x / keep, jnp.zeros_like(x))
    return x + inputs


def normalization_stats(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A Keras Normalization layer's {mean, variance[, count]} -> {'mean', 'var'} of `Normalization`.

  Keras builds an ImageNet-weighted EfficientNet (weights='imagenet') with one more layer after
  the Normalization, Rescaling(1 / sqrt(IMAGENET_STDDEV_RGB)): the published files store the
  standard deviations as the variance, so Normalization alone divides by sqrt(std) and the
  Rescaling divides by sqrt(std) again (tensorflow issue 49930). A weights=None model has no such
  layer. The file does not say which model wrote it, so a file holding exactly the published
  values is taken to be ImageNet's and the factor folded into the variance:
  (x - m) / sqrt(var) / sqrt(std) = (x - m) / sqrt(var * std).
  """
  unknown = sorted(set(weights) - {"mean", "variance", "count"})
  mean, var = (np.asarray(weights[k], np.float32).reshape(-1) for k in ("mean", "variance"))
  if unknown or mean.shape != (3,) or var.shape != (3,):
    raise ValueError(f"EfficientNet normalization layer: expected mean/variance of 3 channels, "
                     f"got {({k: np.shape(v) for k, v in weights.items()})}")
  if (np.allclose(mean, IMAGENET_MEAN_RGB, rtol=0, atol=1e-6)
      and np.allclose(var, IMAGENET_STDDEV_RGB, rtol=0, atol=1e-6)):
    var = var * IMAGENET_STDDEV_RGB
  return {"mean": mean, "var": var}


def _keras_names(specs) -> tuple[list[str], list[str]]:
  """(every weighted layer of a Keras EfficientNet without top, its DepthwiseConv2D layers)."""
  names = ["stem_conv", "stem_bn"]
  for name, _, _, _, _, expand, _ in specs:
    names += [name + "expand_conv", name + "expand_bn"] if expand != 1 else []
    names += [name + s for s in ("dwconv", "bn", "se_reduce", "se_expand", "project_conv",
                                 "project_bn")]
  return names + ["top_conv", "top_bn"], [s[0] + "dwconv" for s in specs]


def convert_keras(layers: dict[str, dict[str, np.ndarray]], width: float, depth: float) -> dict:
  """Keras EfficientNet HDF5 layers (with or without top) -> Flax variables.

  The Normalization layer has an auto-generated name ('normalization', 'normalization_3', ...),
  so it is found by its weights: exactly one layer with 'mean' and 'variance'.
  """
  norms = [n for n, w in layers.items() if "mean" in w and "variance" in w]
  if len(norms) != 1:
    raise ValueError(f"Keras weights do not match EfficientNet: expected one Normalization layer "
                     f"(mean, variance), found {norms}")
  required, depthwise = _keras_names(block_specs(width, depth))
  rest = {n: w for n, w in layers.items() if n != norms[0]}
  variables = convert_keras_layers(rest, required, ["predictions"], model="EfficientNet",
                                   depthwise=depthwise)
  variables["batch_stats"]["normalization"] = normalization_stats(layers[norms[0]])
  return variables


def convert_torch(state: dict[str, np.ndarray]) -> dict:
  """torchvision `efficientnet_b0` state_dict -> variables with Keras' layer names.

  features.0 = stem, features.{i}.{j}.block = block{i}{a+j} (expand, depthwise, SE fc1/fc2,
  project; no expand in stage 1), features.8 = top conv, classifier.1 = predictions.
  """
  used = set()

  def get(key):
    if key not in state:
      raise ValueError(f"torchvision efficientnet_b0 state_dict: missing {key!r}")
    used.add(key)
    return np.asarray(state[key], np.float32)

  params, stats = {}, {}

  def conv(name, key, depthwise=False, bias=False):
    w = get(key + ".weight")
    params[name] = ({"depthwise_kernel": torch_depthwise(w)} if depthwise
                    else {"kernel": torch_conv(w)})
    if bias:
      params[name]["bias"] = get(key + ".bias")

  def bn(name, key):
    params[name] = {"scale": get(key + ".weight"), "bias": get(key + ".bias")}
    stats[name] = {"mean": get(key + ".running_mean"), "var": get(key + ".running_var")}

  conv("stem_conv", "features.0.0"), bn("stem_bn", "features.0.1")
  for spec in block_specs(1.0, 1.0):
    name, expand = spec[0], spec[5]
    f = f"features.{name[5]}.{ord(name[6]) - 97}.block"  # 'block2b_' -> 'features.2.1.block'
    k = 0
    if expand != 1:
      conv(name + "expand_conv", f"{f}.0.0"), bn(name + "expand_bn", f"{f}.0.1")
      k = 1
    conv(name + "dwconv", f"{f}.{k}.0", depthwise=True), bn(name + "bn", f"{f}.{k}.1")
    conv(name + "se_reduce", f"{f}.{k + 1}.fc1", bias=True)
    conv(name + "se_expand", f"{f}.{k + 1}.fc2", bias=True)
    conv(name + "project_conv", f"{f}.{k + 2}.0"), bn(name + "project_bn", f"{f}.{k + 2}.1")
  top = len(BLOCKS) + 1
  conv("top_conv", f"features.{top}.0"), bn("top_bn", f"features.{top}.1")
  if "classifier.1.weight" in state:
    params["predictions"] = {"kernel": torch_linear(get("classifier.1.weight")),
                             "bias": get("classifier.1.bias")}
  unexpected = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
  if unexpected:
    raise ValueError(f"torchvision efficientnet_b0 state_dict: unexpected {unexpected[:5]}")
  return {"params": params, "batch_stats": stats}


def _build(width: float, depth: float, variant: str):
  return lambda **kw: EfficientNet(width=width, depth=depth, variant=variant, **kw)


def _architecture(width: float, depth: float, variant: str) -> Architecture:
  keras = variant == "keras"
  convert = (functools.partial(convert_keras, width=width, depth=depth) if keras
             else convert_torch)
  return Architecture(
      build=_build(width, depth, variant), num_stages=len(block_specs(width, depth)) + 2,
      stage_of=functools.partial(stage_of, width=width, depth=depth),
      preprocessing="raw" if keras else "torch", weight_format="keras_h5" if keras else "torch",
      convert=convert, min_size=MIN_SIZE if keras else 1)


ARCHITECTURES = {
    **{f"efficientnet_{v}": _architecture(w, d, "keras") for v, (w, d) in SCALING.items()},
    "torchvision/efficientnet_b0": _architecture(1.0, 1.0, "torchvision"),
}
