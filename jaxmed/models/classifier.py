"""Backbone + head, with the input normalisation of the backbone's weights built in."""

from typing import Any

import flax.linen as nn

from jaxmed.models.head import Head
from jaxmed.models.preprocess import preprocess


class Classifier(nn.Module):
  """uint8 images -> logits. Parameters live under 'backbone' and 'head'.

  `trainable_from` is the first backbone stage that trains (stages below are frozen: moving BN
  statistics, no gradient); `backbone.num_stages` freezes the whole backbone (Keras phase 1).
  `bn_train` lets trainable stages use batch statistics (False keeps BatchNorm in inference mode
  while its scale and offset still learn, the Keras fine-tuning guide's advice).
  """
  backbone: nn.Module
  head: Head
  preprocessing: str
  num_stages: int
  dtype: Any = None

  @nn.compact
  def __call__(self, images, *, train: bool = False, trainable_from: int = 0, bn_train: bool = True):
    x = preprocess(images, self.preprocessing)
    features = self.backbone(x, train=train and bn_train, trainable_from=trainable_from)
    return self.head(features, train=train)
