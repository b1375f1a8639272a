"""`model.weights` -> backbone variables: 'imagenet' (registry, verified), a file path, or None."""

from pathlib import Path

import flax.traverse_util as tu
import numpy as np

from jaxmed.models.registry import get_architecture
from jaxmed.weights import sources
from jaxmed.weights.convert import check_complete


def resolve(arch: str, weights: str, alpha: float = 1.0) -> Path:
  """The local file for a `model.weights` value: an existing path, else the registry's file."""
  if weights != "imagenet":
    path = Path(weights).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f"model.weights={weights!r}: no such file (or use 'imagenet')")
    return path
  return sources.fetch(sources.imagenet_file(arch, alpha))


def read_variables(arch: str, path: Path) -> dict:
  """Reads a Keras HDF5 (legacy or Keras 3 `.weights.h5`) or torch checkpoint and converts it to {'params', 'batch_stats'}."""
  spec = get_architecture(arch)
  if spec.convert is None:
    raise ValueError(f"{arch} has no pretrained weights (a from-scratch baseline)")
  if spec.weight_format == "keras_h5":
    from jaxmed.weights.keras3_h5 import is_keras3_weights, load_keras3_weights
    from jaxmed.weights.keras_h5 import load_keras_h5
    raw = load_keras3_weights(path, arch) if is_keras3_weights(path) else load_keras_h5(path)
  else:
    from jaxmed.weights.torch_pickle import load_torch_state_dict
    raw = load_torch_state_dict(path)
  return spec.convert(raw)


def load_into(variables: dict, model_config) -> dict:
  """Replaces the backbone's params and BatchNorm statistics in `variables` with pretrained ones."""
  arch, alpha = model_config.arch, model_config.get("alpha", 1.0)
  path = resolve(arch, model_config.weights, alpha)
  converted = read_variables(arch, path)
  converted["params"].pop("predictions", None)  # ImageNet classifier: replaced by our head
  expected = {"params": variables["params"]["backbone"],
              "batch_stats": variables.get("batch_stats", {}).get("backbone", {})}
  check_complete(converted, expected, str(path))
  out = tu.flatten_dict(variables)
  for (collection, *rest), value in tu.flatten_dict(converted).items():
    out[(collection, "backbone", *rest)] = np.asarray(value, np.float32)
  return tu.unflatten_dict(out)
