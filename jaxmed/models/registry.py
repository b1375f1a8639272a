"""Architecture names -> their declarations, and the classifier built from a config."""

import jax.numpy as jnp

from jaxmed.models import lenet, mobilenet_v1, mobilenet_v2, resnet, resnet_torchvision, vgg, xception
from jaxmed.models.architecture import Architecture
from jaxmed.models.classifier import Classifier
from jaxmed.models.head import Head

ARCHITECTURES: dict[str, Architecture] = {}
for _module in (mobilenet_v1, mobilenet_v2, resnet, resnet_torchvision, vgg, xception, lenet):
  ARCHITECTURES.update(_module.ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
  if name not in ARCHITECTURES:
    raise ValueError(f"unknown model.arch {name!r}; available: {', '.join(sorted(ARCHITECTURES))}")
  return ARCHITECTURES[name]


def build_backbone(name: str, alpha: float = 1.0, dtype=jnp.float32, include_top: bool = False,
                   num_classes: int = 1000):
  return get_architecture(name).build(alpha=alpha, dtype=dtype, include_top=include_top,
                                      num_classes=num_classes)


def create_model(model_config, num_classes: int) -> Classifier:
  """Builds the classifier described by a config's `model` section."""
  arch = get_architecture(model_config.arch)
  dtype = jnp.bfloat16 if model_config.get("dtype", "float32") == "bfloat16" else jnp.float32
  head = model_config.head
  return Classifier(
      backbone=build_backbone(model_config.arch, model_config.get("alpha", 1.0), dtype),
      head=Head(num_classes, head.pooling, tuple(head.hidden), head.dropout),
      preprocessing=arch.preprocessing,
      num_stages=arch.num_stages)


def param_stage(arch_name: str, path: tuple[str, ...]) -> int | None:
  """Stage of a parameter given its path ('backbone', layer, ...); None for head parameters."""
  if path[0] != "backbone":
    return None
  return get_architecture(arch_name).stage_of(path[1])
