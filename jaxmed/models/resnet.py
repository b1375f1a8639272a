"""Keras Applications' ResNet50 (v1, He et al. 2015) and ResNet50V2 (pre-activation, He et al. 2016).

Flax module names are Keras' layer names, so a Keras HDF5 file maps one to one (`convert_keras`).
Padding is written out as Keras does it (ZeroPadding2D, then 'valid' conv or pool), including the
zero padding before v2's max pool, which acts on un-rectified conv outputs.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import BatchNorm, Conv
from jaxmed.ops.pooling import max_pool

# (stack name, bottleneck filters, blocks, stride of the stack); Keras' ResNet50 / ResNet50V2 stack_fn.
STACKS_V1 = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))
STACKS_V2 = (("conv2", 64, 3, 2), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 1))
NUM_BLOCKS = 16
BN_EPS = 1.001e-5
PAD1 = ((1, 1), (1, 1))


def num_stages(preact: bool) -> int:
  """Stem, 16 residual blocks, and for v2 the final post_bn."""
  return NUM_BLOCKS + 1 + int(preact)


def stage_of(layer_name: str, preact: bool = False) -> int:
  """Stage (0 = stem, 1..16 = conv2_block1..conv5_block3, 17 = v2's post_bn) of a Keras layer.

  'predictions' (include_top only) is after every backbone stage: it trains unless the whole
  model is frozen.
  """
  if layer_name.startswith("conv1_"):
    return 0
  if layer_name == "post_bn" and preact:
    return NUM_BLOCKS + 1
  if layer_name == "predictions":
    return num_stages(preact)
  stacks = STACKS_V2 if preact else STACKS_V1
  first = 1
  for name, _, blocks, _ in stacks:
    prefix = name + "_block"
    if layer_name.startswith(prefix):
      block = int(layer_name[len(prefix):].split("_", 1)[0])
      if 1 <= block <= blocks:
        return first + block - 1
    first += blocks
  raise ValueError(f"not a ResNet50{'V2' if preact else ''} layer: {layer_name}")


def max_pool_zero_padded(x):
  """Keras' ZeroPadding2D(1) + MaxPooling2D(3, 2, 'valid'): the pad value is 0, not -inf."""
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class ResNet50(nn.Module):
  """Keras ResNet50 (`preact=False`) or ResNet50V2 (`preact=True`).

  Returns the last feature map (N, h, w, 2048), or logits when `include_top`. `train` puts
  BatchNorm of trainable stages in batch-statistics mode; stages below `trainable_from` always use
  moving statistics and get no gradient (stop_gradient at the boundary), as in mobilenet_v2.
  """
  preact: bool = False
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    def conv(name, y, features, kernel, stride=1, padding="VALID", bias=True):
      return Conv(features, (kernel, kernel), (stride, stride), padding, use_bias=bias,
                  dtype=self.dtype, name=name)(y)

    def bn(name, y, stage, activation=None):  # Keras defaults: momentum 0.99
      return BatchNorm(use_running_average=not (train and stage >= trainable_from),
                       momentum=0.99, epsilon=BN_EPS, activation=activation, dtype=self.dtype,
                       name=name)(y)

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    x = freeze_below(x, 0)
    x = conv("conv1_conv", x, 64, 7, 2, ((3, 3), (3, 3)))  # conv1_pad + 'valid'
    if not self.preact:
      x = bn("conv1_bn", x, 0, "relu")
    x = max_pool_zero_padded(x)

    stage = 1
    for stack, filters, blocks, stride in (STACKS_V2 if self.preact else STACKS_V1):
      for i in range(1, blocks + 1):
        x = freeze_below(x, stage)
        name = f"{stack}_block{i}_"
        if self.preact:  # stride on the last block; projection shortcut on the first
          s = stride if i == blocks else 1
          x = self._block_v2(x, conv, functools.partial(bn, stage=stage), name, filters, s, i == 1)
        else:  # stride on the first block, which also has the projection shortcut
          s = stride if i == 1 else 1
          x = self._block_v1(x, conv, functools.partial(bn, stage=stage), name, filters, s, i == 1)
        stage += 1

    if self.preact:
      x = freeze_below(x, stage)
      x = bn("post_bn", x, stage, "relu")
    x = freeze_below(x, num_stages(self.preact))
    if self.include_top:  # logits; Keras applies softmax inside 'predictions'
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x

  @staticmethod
  def _block_v1(x, conv, bn, name, filters, stride, projection):
    shortcut = x
    if projection:
      shortcut = bn(name + "0_bn", conv(name + "0_conv", x, 4 * filters, 1, stride))
    y = bn(name + "1_bn", conv(name + "1_conv", x, filters, 1, stride), activation="relu")
    y = bn(name + "2_bn", conv(name + "2_conv", y, filters, 3, 1, PAD1), activation="relu")
    y = bn(name + "3_bn", conv(name + "3_conv", y, 4 * filters, 1))
    return nn.relu(shortcut + y)

  @staticmethod
  def _block_v2(x, conv, bn, name, filters, stride, projection):
    preact = bn(name + "preact_bn", x, activation="relu")
    if projection:
      shortcut = conv(name + "0_conv", preact, 4 * filters, 1, stride)
    else:  # Keras: MaxPooling2D(1, strides=stride), i.e. subsampling
      shortcut = x[:, ::stride, ::stride] if stride > 1 else x
    y = bn(name + "1_bn", conv(name + "1_conv", preact, filters, 1, bias=False), activation="relu")
    y = conv(name + "2_conv", y, filters, 3, stride, PAD1, bias=False)  # 2_pad + 'valid'
    y = bn(name + "2_bn", y, activation="relu")
    return shortcut + conv(name + "3_conv", y, 4 * filters, 1)


# ---------------------------------------------------------------------------------------------
# Weight conversion, shared with resnet_torchvision.


@functools.lru_cache(maxsize=None)
def expected_layers(module: nn.Module) -> dict[str, dict[str, tuple]]:
  """{layer: {'kernel' | 'bias' | 'scale' | 'mean' | 'var': shape}} of a backbone without top."""
  module = module.clone(include_top=False)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  layers: dict[str, dict[str, tuple]] = {}
  for collection in ("params", "batch_stats"):
    for layer, leaves in shapes.get(collection, {}).items():
      for leaf, value in leaves.items():
        layers.setdefault(layer, {})[leaf] = tuple(value.shape)
  return layers


def assemble(module: nn.Module, layers: dict[str, dict[str, np.ndarray]], source: str) -> dict:
  """Checks Flax-named arrays against `module`'s layers and splits them into params/batch_stats.

  `layers` uses Flax leaf names ('kernel', 'bias', 'scale', 'mean', 'var'). 'predictions' is
  optional (a file with or without the ImageNet top); anything else must match exactly.
  """
  expected = expected_layers(module)
  missing = sorted(set(expected) - set(layers))
  unexpected = sorted(set(layers) - set(expected) - {"predictions"})
  if missing or unexpected:
    raise ValueError(f"{source} weights do not fit {type(module).__name__}: missing layers "
                     f"{missing or 'none'}; unexpected layers {unexpected or 'none'}")
  variables = {"params": {}, "batch_stats": {}}
  for layer, leaves in layers.items():
    want = expected.get(layer)
    if want is not None:
      got = {leaf: tuple(np.shape(v)) for leaf, v in leaves.items()}
      if got != want:
        raise ValueError(f"{source} layer {layer!r}: weights {got}, expected {want}")
    for leaf, value in leaves.items():
      collection = "batch_stats" if leaf in ("mean", "var") else "params"
      variables[collection].setdefault(layer, {})[leaf] = jnp.asarray(value, jnp.float32)
  return variables


KERAS_NAMES = {"kernel": "kernel", "bias": "bias", "gamma": "scale", "beta": "bias",
               "moving_mean": "mean", "moving_variance": "var"}


def convert_keras(layers: dict[str, dict[str, np.ndarray]], *, preact: bool) -> dict:
  """Keras HDF5 layers ({layer: {'kernel': ..., 'gamma': ...}}) -> {'params', 'batch_stats'}.

  Layers without weights (padding, activation, pooling) are skipped.
  """
  return assemble(ResNet50(preact=preact), rename_keras_weights(layers), "Keras")


def rename_keras_weights(layers: dict[str, dict[str, np.ndarray]]) -> dict:
  """Keras weight names -> the modules' (gamma -> scale, ...); weightless layers dropped."""
  renamed = {}
  for layer, weights in layers.items():
    if not weights:
      continue
    unknown = sorted(set(weights) - set(KERAS_NAMES))
    if unknown:
      raise ValueError(f"Keras layer {layer!r}: unexpected weights {unknown}")
    renamed[layer] = {KERAS_NAMES[k]: v for k, v in weights.items()}
  return renamed


def _build(preact: bool) -> Callable[..., nn.Module]:
  def build(alpha: float = 1.0, **kw):  # alpha (a MobileNet width) has no meaning for ResNets
    del alpha
    return ResNet50(preact=preact, **kw)
  return build


ARCHITECTURES = {
    "resnet50": Architecture(
        build=_build(False), num_stages=num_stages(False),
        stage_of=functools.partial(stage_of, preact=False), preprocessing="caffe",
        weight_format="keras_h5", convert=functools.partial(convert_keras, preact=False)),
    "resnet50v2": Architecture(
        build=_build(True), num_stages=num_stages(True),
        stage_of=functools.partial(stage_of, preact=True), preprocessing="tf",
        weight_format="keras_h5", convert=functools.partial(convert_keras, preact=True)),
}
