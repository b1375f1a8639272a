"""VGG16 (Simonyan & Zisserman 2014) with Keras Applications' layer names.

Names `block{b}_conv{i}`, `fc1`, `fc2`, `predictions` match Keras, so its HDF5 files map one to one.
No BatchNorm: `train` only matters through `trainable_from` (stop_gradient below it).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import Conv
from jaxmed.models.mobilenet_v1 import convert_keras_layers
from jaxmed.ops.pooling import max_pool

BLOCK_SPEC = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convs) per block
NUM_STAGES = 5  # the 5 conv blocks; the fully connected top (fc1, fc2, predictions) is stage 5
TOP = ["fc1", "fc2", "predictions"]


def stage_of(layer_name: str) -> int:
  if layer_name.startswith("block") and "_conv" in layer_name:
    return int(layer_name[5]) - 1
  if layer_name in TOP:
    return NUM_STAGES
  raise ValueError(f"not a VGG16 layer: {layer_name}")


class VGG16(nn.Module):
  """Feature extractor; returns the block5 pooled map (N, h/32, w/32, 512), or logits.

  With `include_top` the input must be 224x224 (fc1 expects a 7x7x512 flatten), as in Keras.
  `alpha` is accepted for a uniform build signature and ignored.
  """
  alpha: float = 1.0
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    del train  # no BatchNorm or Dropout in the backbone
    if self.include_top and x.shape[1:3] != (224, 224):
      raise ValueError(f"VGG16 with include_top needs 224x224 inputs, got {x.shape[1:3]}")
    for block, (filters, convs) in enumerate(BLOCK_SPEC, start=1):
      if block - 1 == trainable_from:
        x = jax.lax.stop_gradient(x)
      for i in range(1, convs + 1):
        x = nn.relu(Conv(filters, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                         name=f"block{block}_conv{i}")(x))
      x = max_pool(x, (2, 2), (2, 2))
    if trainable_from == NUM_STAGES:
      x = jax.lax.stop_gradient(x)
    if self.include_top:  # Keras' Flatten of NHWC is this reshape; logits, softmax left out
      x = x.astype(jnp.float32).reshape(x.shape[0], -1)
      x = nn.relu(nn.Dense(4096, name="fc1")(x))
      x = nn.relu(nn.Dense(4096, name="fc2")(x))
      x = nn.Dense(self.num_classes, name="predictions")(x)
    return x


REQUIRED = [f"block{b}_conv{i}" for b, (_, n) in enumerate(BLOCK_SPEC, start=1)
            for i in range(1, n + 1)]


def convert_keras(layers: dict[str, dict[str, np.ndarray]]) -> dict:
  """Keras VGG16 HDF5 layers (with or without the fc top) -> Flax variables (no batch_stats)."""
  return convert_keras_layers(layers, REQUIRED, TOP, model="VGG16")


ARCHITECTURES = {
    "vgg16": Architecture(
        build=lambda **kw: VGG16(**kw), num_stages=NUM_STAGES, stage_of=stage_of,
        preprocessing="caffe", weight_format="keras_h5", convert=convert_keras),
}
