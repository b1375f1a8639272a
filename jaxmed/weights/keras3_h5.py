"""Reads Keras 3's `.weights.h5` layout (`model.save_weights('x.weights.h5')`) into the legacy one.

Keras 3 does not store layer names. `saving_lib` walks `model.layers` in order and files each layer
under a name made from its class and a counter (`layers/conv2d_3/vars/0`, `layers/sequential/
layers/layer_normalization/vars/1`), because layer names are not reproducible across sessions.
Mapping such a file onto a network therefore needs that network's layer order, which only Keras
knows. `keras3_layouts.json` records it per architecture: group path -> [layer name, weight names]
in the legacy file's terms (a DepthwiseConv2D's kernel is 'depthwise_kernel'), made by
`python -m jaxmed.weights keras3-layouts` from Keras' own models and checked against Keras by
tests/weights/test_keras3_weights.py. The result is what `load_keras_h5` returns, so every
architecture's converter reads both formats.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import h5py
import numpy as np

LAYOUTS = Path(__file__).with_name("keras3_layouts.json")


def is_keras3_weights(path: str | os.PathLike) -> bool:
  """True for an HDF5 file in Keras 3's layout (a `layers` group, no legacy `layer_names`)."""
  if not h5py.is_hdf5(os.fspath(path)):
    return False
  with h5py.File(os.fspath(path), "r") as file:
    root = file["model_weights"] if "model_weights" in file else file
    legacy = "layer_names" in root.attrs or "layer_names0" in root.attrs
    return not legacy and isinstance(file.get("layers"), h5py.Group)


@functools.cache
def _layouts() -> dict:
  return json.loads(LAYOUTS.read_text())


def layout_names() -> list[str]:
  return sorted(_layouts())


def _groups(file: h5py.File) -> dict[str, list[np.ndarray]]:
  """{group path: [vars/0, vars/1, ...]} for every group with variables."""
  out = {}

  def visit(name, obj):
    if isinstance(obj, h5py.Group) and name.endswith("/vars") and len(obj):
      out[name[:-len("/vars")]] = [np.asarray(obj[str(i)]) for i in range(len(obj))]
  file.visititems(visit)
  return out


def load_keras3_weights(path: str | os.PathLike, arch: str) -> dict[str, dict[str, np.ndarray]]:
  """{layer name: {weight short name: array}} from a Keras 3 `.weights.h5` of `arch`, in the
  layout's layer order. Raises ValueError naming the file and what does not fit."""
  path = os.fspath(path)
  layouts = _layouts()
  if arch not in layouts:
    raise ValueError(f"{path}: a Keras 3 .weights.h5 file, and jaxmed has no Keras 3 layer layout "
                     f"for {arch!r} (it has: {', '.join(sorted(layouts))}); save it with Keras in "
                     f"the legacy format instead: model.save_weights('x.h5') in Keras 2, or "
                     f"keras.src.legacy.saving.legacy_h5_format.save_weights_to_hdf5_group")
  layout = layouts[arch]
  with h5py.File(path, "r") as file:
    groups = _groups(file)
  unknown = sorted(set(groups) - set(layout))
  if unknown:
    raise ValueError(f"{path}: {len(unknown)} weight groups that a Keras {arch} does not have "
                     f"(e.g. {unknown[0]}); is the file for model.arch={arch!r}?")
  layers: dict[str, dict[str, np.ndarray]] = {}
  for group, (layer, names) in layout.items():  # the layout's order: Keras' layer order
    if group not in groups:
      continue  # the top (predictions) of an include_top=False file; the converter checks the rest
    arrays = groups[group]
    if len(arrays) != len(names):
      raise ValueError(f"{path}: {group} holds {len(arrays)} variables where Keras {arch} layer "
                       f"{layer!r} has {len(names)} ({', '.join(names)}); is the file for "
                       f"model.arch={arch!r}?")
    layers.setdefault(layer, {}).update(zip(names, arrays))
  return layers
