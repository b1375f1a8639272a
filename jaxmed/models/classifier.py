"""Backbone + head, with the input normalisation of the backbone's weights built in."""

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

  @nn.compact
  def __call__(self, images, *, train: bool = False, trainable_from: int = 0, bn_train: bool = True):
    x = preprocess(images, self.preprocessing)
    features = self.backbone(x, train=train and bn_train, trainable_from=trainable_from)
    return self.head(features, train=train)

  def pooled_features(self, images):
    """What the head sees of a frozen backbone (inference mode), cacheable per image: avg/max
    pooling done here as the head does it, kept (N, 1, 1, C) so the head's pooling is exact."""
    features = self.backbone(preprocess(images, self.preprocessing), train=False,
                             trainable_from=self.num_stages).astype("float32")
    if self.head.pooling == "avg":
      return features.mean(axis=(1, 2), keepdims=True)
    if self.head.pooling == "max":
      return features.max(axis=(1, 2), keepdims=True)
    return features

  def classify_features(self, features, *, train: bool = False):
    """The head alone, on `pooled_features` (training on cached features)."""
    return self.head(features, train=train)
