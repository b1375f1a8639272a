"""Classification heads as Keras users build them on top of `include_top=False` backbones."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class Head(nn.Module):
  """pool ('avg' | 'max' | 'flatten') -> [Dense(h) -> ReLU -> Dropout] * len(hidden) -> Dense(K).

  Returns logits; softmax belongs to the loss and the metrics, where it is numerically stable.
  """
  num_classes: int
  pooling: str = "avg"
  hidden: Sequence[int] = ()
  dropout: float = 0.0

  @nn.compact
  def __call__(self, features, *, train: bool = False):
    x = features.astype(jnp.float32)
    if self.pooling == "avg":
      x = x.mean(axis=(1, 2))
    elif self.pooling == "max":
      x = x.max(axis=(1, 2))
    elif self.pooling == "flatten":
      x = x.reshape(x.shape[0], -1)
    else:
      raise ValueError(f"head pooling must be 'avg', 'max' or 'flatten', got {self.pooling!r}")
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense_{i}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if not self.hidden and self.dropout:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="logits")(x)
