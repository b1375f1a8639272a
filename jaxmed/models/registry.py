"""Architecture names -> their declarations, and the classifier built from a config."""

import jax.numpy as jnp

from jaxmed.models import (convnext, densenet, efficientnet, efficientnet_v2, inception_v3, lenet,
                           mobilenet_v1, mobilenet_v2, resnet, resnet_torchvision, vgg, xception)
from jaxmed.models.architecture import Architecture
from jaxmed.models.classifier import Classifier
from jaxmed.models.head import Head
from jaxmed.models.preprocess import MODES

# One model family per module, each declaring ARCHITECTURES (the order is the listing order).
_FAMILIES = (mobilenet_v1, mobilenet_v2, resnet, resnet_torchvision, vgg, xception, efficientnet,
             efficientnet_v2, densenet, inception_v3, convnext, lenet)
ARCHITECTURES: dict[str, Architecture] = {}
for _family in _FAMILIES:
  ARCHITECTURES.update(_family.ARCHITECTURES)


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
  dtype = jnp.bfloat16 if compute_dtype(model_config)["dtype"] == "bfloat16" else jnp.float32
  head = model_config.head
  return Classifier(
      backbone=build_backbone(model_config.arch, model_config.get("alpha", 1.0), dtype),
      head=Head(num_classes, head.pooling, tuple(head.hidden), head.dropout),
      preprocessing=preprocessing_of(model_config),
      num_stages=arch.num_stages)


def compute_dtype(model_config) -> dict:
  """`model.dtype` resolved for this process's backend ('auto': bfloat16 on a CPU whose matrix
  unit makes it pay, else float32): {'setting', 'dtype', 'reason', 'probe'}, kept in summary.json.
  Parameters, optimizer state and BatchNorm statistics stay float32 in either case."""
  import jax
  from jaxmed.runtime import matrix_units
  choice = matrix_units.choose_dtype(model_config.get("dtype", "float32"), jax.default_backend())
  if choice["dtype"] == "bfloat16" and jax.default_backend() == "cpu":
    matrix_units.bfloat16_gemm_pays()  # probed now, not while conv2d is being traced
  return choice


def preprocessing_of(model_config) -> str:
  """`model.preprocessing` when set (a weight file trained with another normalisation, e.g.
  RadImageNet's), else the one the architecture's ImageNet weights expect."""
  mode = model_config.get("preprocessing") or get_architecture(model_config.arch).preprocessing
  if mode not in MODES:
    raise ValueError(f"model.preprocessing={mode!r}: one of {', '.join(MODES)}")
  return mode


def param_stage(arch_name: str, path: tuple[str, ...]) -> int | None:
  """Stage of a parameter given its path ('backbone', layer, ...); None for head parameters."""
  if path[0] != "backbone":
    return None
  return get_architecture(arch_name).stage_of(path[1])
