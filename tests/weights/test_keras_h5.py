"""Tests for the Keras legacy HDF5 weights reader/writer (jaxmed.weights.keras_h5)."""

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from jaxmed.weights.keras_h5 import load_keras_h5, save_keras_h5

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MOBILENET_V1_025 = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
MOBILENET_V1_025_SHA256 = "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"


def _layers():
  rng = np.random.default_rng(0)
  return {
      "input_1": {},
      "conv1": {"kernel": rng.standard_normal((3, 3, 3, 8)).astype(np.float32)},
      "conv1_bn": {name: rng.standard_normal(8).astype(np.float32)
                   for name in ("gamma", "beta", "moving_mean", "moving_variance")},
      "conv_dw_1": {"depthwise_kernel": rng.standard_normal((3, 3, 8, 1)).astype(np.float32)},
      "block_1_sep": {"depthwise_kernel": np.ones((3, 3, 8, 1), np.float16),
                      "pointwise_kernel": np.ones((1, 1, 8, 4), np.float64)},
      "predictions": {"kernel": np.eye(4, dtype=np.float32), "bias": np.zeros(4, np.float32)},
  }


def _assert_same(loaded, expected):
  assert list(loaded) == list(expected)
  for layer, weights in expected.items():
    assert list(loaded[layer]) == list(weights), layer
    for name, value in weights.items():
      assert loaded[layer][name].dtype == value.dtype
      np.testing.assert_array_equal(loaded[layer][name], value, err_msg=f"{layer}/{name}")


def test_round_trip_keeps_order_names_dtypes_and_empty_layers(tmp_path):
  layers = _layers()
  path = tmp_path / "w.h5"
  save_keras_h5(path, layers)
  _assert_same(load_keras_h5(path), layers)
  with h5py.File(path, "r") as file:  # the on-disk layout Keras itself writes
    assert file.attrs["backend"] == "tensorflow"
    assert file.attrs["layer_names"][1] == b"conv1"
    assert list(file["conv1_bn"].attrs["weight_names"]) == [
        b"conv1_bn/gamma:0", b"conv1_bn/beta:0", b"conv1_bn/moving_mean:0",
        b"conv1_bn/moving_variance:0"]
    assert file["conv1/conv1/kernel:0"].shape == (3, 3, 3, 8)


def test_save_with_explicit_order(tmp_path):
  layers = _layers()
  order = ["predictions", "conv1", "input_1", "conv_dw_1", "conv1_bn", "block_1_sep"]
  save_keras_h5(tmp_path / "w.h5", layers, order=order)
  assert list(load_keras_h5(tmp_path / "w.h5")) == order
  with pytest.raises(ValueError, match="unknown or repeated"):
    save_keras_h5(tmp_path / "bad.h5", layers, order=["conv1", "nope"])


def test_reads_full_model_files_flat_weight_paths_and_chunked_names(tmp_path):
  # A `model.save()` file keeps weights under `model_weights`; older files store flat 'kernel:0' paths;
  # Keras splits name lists over 64 KiB into layer_names0, layer_names1, ...
  path = tmp_path / "full_model.h5"
  many = [f"dense_{i:03d}_" + "x" * 470 for i in range(140)]  # 140 * 480 bytes > 64 KiB
  with h5py.File(path, "w") as file:
    file.attrs["model_config"] = "{}"
    root = file.create_group("model_weights")
    names = np.array([n.encode() for n in many])
    for i, chunk in enumerate(np.array_split(names, 2)):
      root.attrs[f"layer_names{i}"] = chunk
    for n in many:
      group = root.create_group(n)
      group.attrs["weight_names"] = [b"bias:0"]
      group["bias:0"] = np.full(2, len(n), np.float32)
  loaded = load_keras_h5(path)
  assert list(loaded) == many
  np.testing.assert_array_equal(loaded[many[-1]]["bias"], np.full(2, len(many[-1])))
  save_keras_h5(tmp_path / "resaved.h5", loaded)  # the writer must chunk too, or h5py raises
  assert list(load_keras_h5(tmp_path / "resaved.h5")) == many


def test_clear_errors(tmp_path):
  not_h5 = tmp_path / "weights.h5"
  not_h5.write_bytes(b"\x89PNG not hdf5")
  with pytest.raises(ValueError, match=f"{not_h5}: not an HDF5 file"):
    load_keras_h5(not_h5)
  no_names = tmp_path / "plain.h5"
  with h5py.File(no_names, "w") as file:
    file["x"] = np.zeros(3)
  with pytest.raises(ValueError, match=f"{no_names}: HDF5 file without a 'layer_names'"):
    load_keras_h5(no_names)
  with pytest.raises(FileNotFoundError):
    load_keras_h5(tmp_path / "missing.h5")


def test_real_keras_mobilenet_v1_alpha_025():
  if not MOBILENET_V1_025.is_file():
    pytest.skip(f"{MOBILENET_V1_025} absent (shared reference weights not available)")
  assert hashlib.sha256(MOBILENET_V1_025.read_bytes()).hexdigest() == MOBILENET_V1_025_SHA256
  layers = load_keras_h5(MOBILENET_V1_025)
  names = list(layers)
  assert names[:4] == ["input_1", "conv1", "conv1_bn", "conv1_relu"]
  assert names[-1] == "global_average_pooling2d_1" and len(names) == 83
  assert layers["conv1_relu"] == {}
  assert layers["conv1"]["kernel"].shape == (3, 3, 3, 8)  # alpha 0.25: 32 * 0.25 filters
  assert list(layers["conv1_bn"]) == ["gamma", "beta", "moving_mean", "moving_variance"]
  # alpha 0.25 pointwise widths: 64, 128, 128, 256, 256, 512 x6, 1024, 1024 times 0.25
  widths = [16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]
  channels = 8
  for block, width in enumerate(widths, start=1):
    assert layers[f"conv_dw_{block}"]["depthwise_kernel"].shape == (3, 3, channels, 1)
    assert layers[f"conv_dw_{block}_bn"]["moving_variance"].shape == (channels,)
    assert layers[f"conv_pw_{block}"]["kernel"].shape == (1, 1, channels, width)
    assert layers[f"conv_pw_{block}_bn"]["gamma"].shape == (width,)
    channels = width
  assert sum(v.size for w in layers.values() for v in w.values()) == 218_544  # Keras reports 218,544 params for this model
  assert all((w["moving_variance"] > 0).all() for n, w in layers.items() if n.endswith("_bn"))
