"""torchvision's ResNet18/34/50 (ResNet50 is v1.5: the stride sits on the 3x3 conv).

Flax module names are the torch state_dict module paths with '.' -> '_' ('layer1_0_conv1',
'layer2_0_downsample_0'), except 'fc' -> 'predictions' as in the Keras models, so the converter is
a rename plus the layout changes: conv (O, I, kh, kw) -> HWIO and linear (out, in) -> (in, out).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import BatchNorm, Conv
from jaxmed.models.resnet import assemble
from jaxmed.ops.pooling import max_pool

# name -> (block type, blocks per layer); torchvision's resnet18 / resnet34 / resnet50.
DEPTHS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3))}
WIDTHS = (64, 128, 256, 512)


def stage_of(layer_name: str, layers: Sequence[int]) -> int:
  """Stage (0 = stem, then one per residual block, bottom to top) of a Flax layer name.

  'predictions' (include_top only) is after every backbone stage.
  """
  if layer_name in ("conv1", "bn1"):
    return 0
  if layer_name == "predictions":
    return sum(layers) + 1
  parts = layer_name.split("_")
  if parts[0].startswith("layer") and len(parts) >= 3:
    layer, block = int(parts[0][len("layer"):]) - 1, int(parts[1])
    if 0 <= layer < len(layers) and 0 <= block < layers[layer]:
      return 1 + sum(layers[:layer]) + block
  raise ValueError(f"not a torchvision ResNet layer: {layer_name}")


class TorchvisionResNet(nn.Module):
  """Returns the last feature map (N, h, w, C), or logits when `include_top` (avgpool + fc).

  Freezing as in `resnet.ResNet50`: stages below `trainable_from` use moving BN statistics and
  get no gradient.
  """
  block: str = "bottleneck"  # 'basic' | 'bottleneck'
  layers: Sequence[int] = (3, 4, 6, 3)
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    def conv(name, y, features, kernel, stride=1):  # torch pads symmetrically, kernel // 2
      p = kernel // 2
      return Conv(features, (kernel, kernel), (stride, stride), ((p, p), (p, p)), use_bias=False,
                  dtype=self.dtype, name=name)(y)

    def bn(name, y, stage, activation=None):  # torch momentum 0.1 is Flax momentum 0.9
      return BatchNorm(use_running_average=not (train and stage >= trainable_from),
                       momentum=0.9, epsilon=1e-5, activation=activation, dtype=self.dtype,
                       name=name)(y)

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    x = freeze_below(x, 0)
    x = bn("bn1", conv("conv1", x, 64, 7, 2), 0, "relu")
    # torch's MaxPool2d pads with -inf; Flax's max_pool pads with its -inf init value.
    x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    stage = 1
    expansion = 4 if self.block == "bottleneck" else 1
    for li, (width, blocks) in enumerate(zip(WIDTHS, self.layers)):
      for bi in range(blocks):
        x = freeze_below(x, stage)
        name, stride = f"layer{li + 1}_{bi}_", (2 if li > 0 and bi == 0 else 1)
        b = functools.partial(bn, stage=stage)
        shortcut = x
        if stride != 1 or x.shape[-1] != width * expansion:
          shortcut = b(name + "downsample_1", conv(name + "downsample_0", x, width * expansion, 1,
                                                    stride))
        if self.block == "bottleneck":
          y = b(name + "bn1", conv(name + "conv1", x, width, 1), activation="relu")
          y = b(name + "bn2", conv(name + "conv2", y, width, 3, stride), activation="relu")
          y = b(name + "bn3", conv(name + "conv3", y, width * expansion, 1))
        else:
          y = b(name + "bn1", conv(name + "conv1", x, width, 3, stride), activation="relu")
          y = b(name + "bn2", conv(name + "conv2", y, width, 3))
        x = nn.relu(shortcut + y)
        stage += 1

    x = freeze_below(x, stage)
    if self.include_top:
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x


TORCH_NAMES = {"weight": None, "bias": "bias", "running_mean": "mean", "running_var": "var"}


def convert_torch(state_dict: dict[str, np.ndarray], *, depth: str) -> dict:
  """torchvision state_dict -> {'params', 'batch_stats'} of `TorchvisionResNet` for `depth`.

  `num_batches_tracked` is dropped. A 'weight' is a conv kernel (4-D), a BN scale (its module
  also has running stats) or the fc kernel.
  """
  modules: dict[str, dict[str, np.ndarray]] = {}
  for key, value in state_dict.items():
    module, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
      continue
    modules.setdefault(module, {})[leaf] = np.asarray(value)
  layers = {}
  for module, tensors in modules.items():
    unknown = sorted(set(tensors) - set(TORCH_NAMES))
    if unknown:
      raise ValueError(f"torch module {module!r}: unexpected tensors {unknown}")
    name = "predictions" if module == "fc" else module.replace(".", "_")
    out = {}
    for leaf, value in tensors.items():
      if leaf != "weight":
        out[TORCH_NAMES[leaf]] = value
      elif value.ndim == 4:
        out["kernel"] = value.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
      elif value.ndim == 2:
        out["kernel"] = value.T                       # (out, in) -> (in, out)
      else:
        out["scale"] = value
    layers[name] = out
  block, depths = DEPTHS[depth]
  return assemble(TorchvisionResNet(block=block, layers=depths), layers, f"torchvision {depth}")


def _build(depth: str):
  block, depths = DEPTHS[depth]

  def build(alpha: float = 1.0, **kw):  # alpha (a MobileNet width) has no meaning for ResNets
    del alpha
    return TorchvisionResNet(block=block, layers=depths, **kw)
  return build


ARCHITECTURES = {
    f"torchvision/{depth}": Architecture(
        build=_build(depth), num_stages=sum(depths) + 1,
        stage_of=functools.partial(stage_of, layers=depths), preprocessing="torch",
        weight_format="torch", convert=functools.partial(convert_torch, depth=depth))
    for depth, (_, depths) in DEPTHS.items()
}
