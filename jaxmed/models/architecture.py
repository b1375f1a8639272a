"""What jaxmed needs to know about a backbone family, declared by each model module."""

import dataclasses
from typing import Callable, Optional

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Architecture:
  """One registered architecture name (e.g. 'mobilenet_v2', 'torchvision/resnet50').

  build(alpha, dtype, include_top, num_classes) -> backbone module whose __call__ is
    (x_preprocessed, *, train, trainable_from) -> feature map (N, h, w, C), or logits (N, classes)
    when include_top.
  convert(weights_dict) -> {'params': ..., 'batch_stats': ...} of that backbone, from the
    source's own layout: Keras HDF5 layers {layer: {name: array}} or a torch state_dict.
  """
  build: Callable[..., nn.Module]
  num_stages: int                                 # units of partial unfreezing, bottom to top
  stage_of: Callable[[str], int]                  # top-level backbone layer name -> stage index
  preprocessing: str                              # normalisation the official weights expect
  weight_format: str                              # 'keras_h5' | 'torch'
  convert: Optional[Callable[[dict], dict]] = None
  min_size: int = 1                               # smallest input side the network accepts
