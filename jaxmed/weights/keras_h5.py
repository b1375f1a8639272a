"""Reads and writes the Keras legacy HDF5 weights layout (`model.save_weights('x.h5')`, Keras Applications).

Layout: the root group (or `model_weights` in full-model files) has attribute `layer_names`; each layer
has a group of that name with attribute `weight_names`, paths relative to the group such as
`conv1/kernel:0` (stored nested, `/conv1/conv1/kernel:0`). Attributes too large for one HDF5 object
header (64 KiB) are split by Keras into `<name>0`, `<name>1`, ...; both directions handle that.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

__all__ = ["load_keras_h5", "save_keras_h5"]

# HDF5 object headers hold at most 64 KiB of attributes; Keras chunks larger name lists.
_MAX_ATTRIBUTE_BYTES = 64512


def _decode(name) -> str:
  return name.decode("utf8") if isinstance(name, bytes) else str(name)


def _read_names(group: h5py.Group, attr: str) -> list[str] | None:
  """Reads a string-list attribute, joining Keras' `<attr>0`, `<attr>1`, ... chunks; None if absent."""
  if attr in group.attrs:
    chunks = [group.attrs[attr]]
  elif f"{attr}0" in group.attrs:
    chunks, i = [], 0
    while f"{attr}{i}" in group.attrs:
      chunks.append(group.attrs[f"{attr}{i}"])
      i += 1
  else:
    return None
  return [_decode(n) for chunk in chunks for n in np.atleast_1d(chunk)]


def _write_names(group: h5py.Group, attr: str, names: list[str]) -> None:
  """Writes names as a bytes array, chunked like Keras' save_attributes_to_hdf5_group when too large."""
  data = np.array([n.encode("utf8") for n in names])  # empty list -> float64 [], as Keras writes it
  n_chunks = 1
  while data.nbytes / n_chunks > _MAX_ATTRIBUTE_BYTES:
    n_chunks += 1
  if n_chunks == 1:
    group.attrs[attr] = data
  else:
    for i, chunk in enumerate(np.array_split(data, n_chunks)):
      group.attrs[f"{attr}{i}"] = chunk


def _short_name(weight_name: str) -> str:
  """'block_1_expand/kernel:0' or 'conv1/conv1/kernel:0' -> 'kernel'."""
  return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def load_keras_h5(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
  """Loads {layer name: {weight short name: array}} in the file's layer order.

  Layers without weights (input, activation, pooling layers) are included with an empty dict, so the
  result also lists the model's layer sequence. Raises ValueError naming the file when it is not HDF5,
  has no `layer_names`, or a layer has two weights with the same short name.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if not h5py.is_hdf5(path):
    raise ValueError(f"{path}: not an HDF5 file (expected Keras .h5 weights)")
  with h5py.File(path, "r") as file:
    root = file["model_weights"] if "model_weights" in file else file
    layer_names = _read_names(root, "layer_names")
    if layer_names is None:
      raise ValueError(f"{path}: HDF5 file without a 'layer_names' attribute (not a Keras legacy "
                       "weights file; Keras 3 '.weights.h5' files are read by keras3_h5.py)")
    layers = {}
    for layer_name in layer_names:
      group = root[layer_name]
      weights = {}
      for weight_name in _read_names(group, "weight_names") or []:
        short = _short_name(weight_name)
        if short in weights:
          raise ValueError(f"{path}: layer {layer_name!r} has two weights named {short!r}")
        weights[short] = np.asarray(group[weight_name])
      layers[layer_name] = weights
  return layers


def save_keras_h5(path: str | os.PathLike, layers: dict[str, dict[str, np.ndarray]],
                  order: list[str] | None = None) -> None:
  """Writes `layers` in the Keras legacy weights layout, readable by Keras' `load_weights(by_name=...)`.

  `order` gives the layer order (default: the dict's order); weights are stored as `<layer>/<name>:0`
  in each layer's dict order, which is the order Keras assigns them to a layer's variables.
  """
  order = list(layers) if order is None else list(order)
  missing = [name for name in order if name not in layers]
  if missing or len(set(order)) != len(order):
    raise ValueError(f"{path}: order names unknown or repeated layers: {missing or order}")
  with h5py.File(os.fspath(path), "w") as file:
    _write_names(file, "layer_names", order)
    file.attrs["backend"] = "tensorflow"
    file.attrs["keras_version"] = "2.15.0"  # any 2.x: Keras converts only 1.x files
    for layer_name in order:
      group = file.create_group(layer_name)
      weight_names = [f"{layer_name}/{short}:0" for short in layers[layer_name]]
      _write_names(group, "weight_names", weight_names)
      for weight_name, value in zip(weight_names, layers[layer_name].values()):
        group.create_dataset(weight_name, data=np.asarray(value))
