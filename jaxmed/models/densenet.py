"""DenseNet-121 (Huang et al. 2017, DenseNet-BC) as Keras Applications and torchvision build it.

The two are the same network: a 7x7/2 stem conv + BN + relu + 3x3/2 max pool, four dense blocks of
6/12/24/16 layers (BN-relu-1x1 conv to 128 channels, BN-relu-3x3 conv to 32, concatenated to the
block's running features), BN-relu-1x1 conv (half the channels)-2x2/2 average pool transitions
between blocks, and a final BN + relu. Their paddings agree (Keras' ZeroPadding2D(3) + 'valid' stem
is torch's padding=3; Keras' 3x3 'same' at stride 1 is symmetric). They differ in:
  - BatchNorm epsilon: Keras 1.001e-5, torch 1e-5; momentum: Keras 0.99, torch 0.1 (Flax 0.9);
  - the max pool's padding: Keras pads the relu output with zeros, torch with -inf (the same
    result on non-negative inputs; each keeps its own so nothing rests on that argument);
  - layer names. Keras: conv1_conv/conv1_bn, conv{2..5}_block{i}_{0_bn,1_conv,1_bn,2_conv},
    pool{2..4}_{bn,conv}, bn, predictions. torchvision: the state_dict module path without the
    'features.' prefix, '.' -> '_' (conv0, norm0, denseblock{b}_denselayer{i}_{norm1,conv1,norm2,
    conv2}, transition{b}_{norm,conv}, norm5), and 'classifier' -> 'predictions'.
The feature map is the final relu's output, as Keras' `include_top=False` model ends (torchvision
applies that relu in `forward`, after `features`).

Stages for partial unfreezing: 0 = stem, then one per dense layer and one per transition, bottom
to top (1..61), the final BN (62); 'predictions' is 63. A dense layer (two convs behind two BNs)
is DenseNet's counterpart of a ResNet bottleneck block, which is one stage in resnet.py, so
`unfreeze=N` means about the same depth of fine-tuning in both; per dense block it would be too
coarse: the top two stages would already hold 31% of the parameters (bn + conv5), the top three
79%.

A dense block concatenates each layer's 32 channels onto its input (`jnp.concatenate`, as Keras'
Concatenate layer). In the forward pass XLA frees each concatenation once the next one is built:
jitted, batch 8 at 224 px, float32, 64 MiB of temporaries (two 56x56x256 maps' worth). A training
gradient keeps every layer's concatenated input for the backward pass, as Keras and torchvision do
(torchvision's memory_efficient recomputation is not reproduced): 0.96 GiB at the same size.
"""

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import BatchNorm, Conv
from jaxmed.models.resnet import assemble, max_pool_zero_padded, rename_keras_weights
from jaxmed.ops.pooling import max_pool

BLOCKS = (6, 12, 24, 16)  # dense layers per block, DenseNet-121
GROWTH = 32               # channels each dense layer adds
BOTTLENECK = 4 * GROWTH   # channels of the 1x1 conv inside a dense layer
STEM_FEATURES = 64
MIN_SIZE = 32             # Keras' minimum input size: the last transition leaves 1x1
NUM_BACKBONE_UNITS = sum(BLOCKS) + len(BLOCKS) - 1  # dense layers + transitions: 61
FINAL_BN_STAGE = NUM_BACKBONE_UNITS + 1
NUM_STAGES = FINAL_BN_STAGE + 1


def _unit_stages():
  """(block 0..3, dense layer 1..n or 0 for the transition after the block) -> stage."""
  stages, stage = {}, 1
  for b, layers in enumerate(BLOCKS):
    for i in range(1, layers + 1):
      stages[b, i] = stage
      stage += 1
    if b < len(BLOCKS) - 1:
      stages[b, 0] = stage
      stage += 1
  return stages


UNIT_STAGES = _unit_stages()

# Layer names per source. Dense layer (block b 0..3, layer i) -> its four layers in call order
# (bn, conv 1x1, bn, conv 3x3); transition after block b -> (bn, conv).
NAMES = {
    "keras": dict(
        stem=("conv1_conv", "conv1_bn"), final="bn",
        layer=lambda b, i: tuple(f"conv{b + 2}_block{i}_{s}" for s in
                                 ("0_bn", "1_conv", "1_bn", "2_conv")),
        transition=lambda b: (f"pool{b + 2}_bn", f"pool{b + 2}_conv")),
    "torchvision": dict(
        stem=("conv0", "norm0"), final="norm5",
        layer=lambda b, i: tuple(f"denseblock{b + 1}_denselayer{i}_{s}" for s in
                                 ("norm1", "conv1", "norm2", "conv2")),
        transition=lambda b: (f"transition{b + 1}_norm", f"transition{b + 1}_conv")),
}
_KERAS_UNIT = re.compile(r"conv(\d)_block(\d+)_(?:0_bn|1_conv|1_bn|2_conv)|pool(\d)_(?:bn|conv)")
_TORCH_UNIT = re.compile(r"denseblock(\d)_denselayer(\d+)_(?:norm1|conv1|norm2|conv2)"
                         r"|transition(\d)_(?:norm|conv)")


def stage_of(layer_name: str, source: str = "keras") -> int:
  """Stage of a top-level layer name of `source` ('keras' | 'torchvision'); see the module doc."""
  names = NAMES[source]
  if layer_name in names["stem"]:
    return 0
  if layer_name == names["final"]:
    return FINAL_BN_STAGE
  if layer_name == "predictions":
    return NUM_STAGES
  # Keras numbers blocks conv2..conv5 and transitions pool2..pool4; torchvision from 1.
  match, offset = ((_KERAS_UNIT, 2) if source == "keras" else (_TORCH_UNIT, 1))
  m = match.fullmatch(layer_name)
  if m:
    block, layer, transition = m.groups()
    key = (int(block) - offset, int(layer)) if block else (int(transition) - offset, 0)
    if key in UNIT_STAGES and not (block and key[1] == 0):  # 'block0' is no dense layer
      return UNIT_STAGES[key]
  raise ValueError(f"not a {source} DenseNet-121 layer: {layer_name}")


class DenseNet121(nn.Module):
  """Returns the final relu's feature map (N, h/32, w/32, 1024), or logits when `include_top`
  (global average pool + Dense 'predictions'; Keras' softmax is the caller's).

  `source` picks the layer names and the BatchNorm/max-pool details of Keras or torchvision.
  Stages below `trainable_from` use moving BN statistics and get no gradient (stop_gradient at the
  boundary, where the concatenated features carry everything below), as in resnet.py.
  """
  source: str = "keras"  # 'keras' | 'torchvision'
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    if min(x.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"DenseNet-121 needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, "
                       f"got {x.shape[1:3]}")
    keras = self.source == "keras"
    names = NAMES[self.source]

    def conv(name, y, features, kernel, stride=1):  # both sources pad symmetrically, kernel // 2
      p = kernel // 2
      return Conv(features, (kernel, kernel), (stride, stride), ((p, p), (p, p)), use_bias=False,
                  dtype=self.dtype, name=name)(y)

    def bn_relu(name, y, stage):  # every BatchNorm in DenseNet is followed by a relu
      return BatchNorm(use_running_average=not (train and stage >= trainable_from),
                       momentum=0.99 if keras else 0.9, epsilon=1.001e-5 if keras else 1e-5,
                       activation="relu", dtype=self.dtype, name=name)(y)

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    x = freeze_below(x, 0)
    x = bn_relu(names["stem"][1], conv(names["stem"][0], x, STEM_FEATURES, 7, 2), 0)
    if keras:  # ZeroPadding2D(1) + MaxPooling2D(3, 2)
      x = max_pool_zero_padded(x)
    else:      # MaxPool2d(3, 2, padding=1), which pads with -inf
      x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    for b, layers in enumerate(BLOCKS):
      for i in range(1, layers + 1):
        stage = UNIT_STAGES[b, i]
        x = freeze_below(x, stage)
        bn1, conv1, bn2, conv2 = names["layer"](b, i)
        y = conv(conv1, bn_relu(bn1, x, stage), BOTTLENECK, 1)
        y = conv(conv2, bn_relu(bn2, y, stage), GROWTH, 3)
        x = jnp.concatenate([x, y.astype(x.dtype)], axis=-1)
      if b < len(BLOCKS) - 1:
        stage = UNIT_STAGES[b, 0]
        x = freeze_below(x, stage)
        bn, tconv = names["transition"](b)
        x = conv(tconv, bn_relu(bn, x, stage), x.shape[-1] // 2, 1)
        x = _avg_pool_2x2(x)

    x = freeze_below(x, FINAL_BN_STAGE)
    x = bn_relu(names["final"], x, FINAL_BN_STAGE)
    x = freeze_below(x, NUM_STAGES)
    if self.include_top:  # logits; Keras applies softmax inside 'predictions'
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x


def _avg_pool_2x2(x):
  """AveragePooling2D(2, 2) / AvgPool2d(2, 2): 'valid', an odd last row or column is dropped."""
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4), dtype=jnp.float32).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Weight conversion.


def convert_keras(layers: dict[str, dict[str, np.ndarray]]) -> dict:
  """Keras DenseNet121 HDF5 layers (with or without top) -> {'params', 'batch_stats'}.

  Layers without weights (padding, activation, pooling, concatenation) are skipped.
  """
  return assemble(DenseNet121(source="keras"), rename_keras_weights(layers), "Keras DenseNet121")


# torchvision's DenseNet once named a dense layer's modules 'norm.1', 'conv.1', 'norm.2', 'conv.2';
# the published densenet121-a639ec97.pth still does, and torchvision renames them on load.
_OLD_DENSE_KEY = re.compile(r"(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.[a-z_]+)")
_TORCH_LEAVES = {"bias": "bias", "running_mean": "mean", "running_var": "var"}


def convert_torch(state_dict: dict[str, np.ndarray]) -> dict:
  """torchvision densenet121 state_dict (either key style) -> {'params', 'batch_stats'}.

  A 'weight' is a conv kernel (4-D, OIHW -> HWIO), the classifier's (2-D, transposed) or a
  BatchNorm scale (1-D); `num_batches_tracked` is dropped.
  """
  modules: dict[str, dict[str, np.ndarray]] = {}
  for key, value in state_dict.items():
    old = _OLD_DENSE_KEY.fullmatch(key)
    if old:  # 'norm.1.weight' -> 'norm1.weight'
      key = old.group(1) + old.group(2)
    module, _, leaf = key.rpartition(".")
    if leaf != "num_batches_tracked":
      modules.setdefault(module, {})[leaf] = np.asarray(value)
  layers = {}
  for module, tensors in modules.items():
    unknown = sorted(set(tensors) - set(_TORCH_LEAVES) - {"weight"})
    if unknown:
      raise ValueError(f"torch module {module!r}: unexpected tensors {unknown}")
    name = "predictions" if module == "classifier" else module.removeprefix("features.")
    out = {_TORCH_LEAVES[leaf]: v for leaf, v in tensors.items() if leaf != "weight"}
    weight = tensors.get("weight")
    if weight is not None and weight.ndim == 4:
      out["kernel"] = weight.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
    elif weight is not None and weight.ndim == 2:
      out["kernel"] = weight.T                      # (out, in) -> (in, out)
    elif weight is not None:
      out["scale"] = weight
    layers[name.replace(".", "_")] = out
  return assemble(DenseNet121(source="torchvision"), layers, "torchvision densenet121")


def _build(source: str):
  def build(alpha: float = 1.0, **kw):  # alpha (a MobileNet width) has no meaning for DenseNet
    del alpha
    return DenseNet121(source=source, **kw)
  return build


ARCHITECTURES = {
    "densenet121": Architecture(
        build=_build("keras"), num_stages=NUM_STAGES,
        stage_of=functools.partial(stage_of, source="keras"), preprocessing="torch",
        weight_format="keras_h5", convert=convert_keras, min_size=MIN_SIZE),
    "torchvision/densenet121": Architecture(
        build=_build("torchvision"), num_stages=NUM_STAGES,
        stage_of=functools.partial(stage_of, source="torchvision"), preprocessing="torch",
        weight_format="torch", convert=convert_torch, min_size=MIN_SIZE),
}
