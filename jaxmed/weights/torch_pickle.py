"""Reads PyTorch checkpoints (.pt/.pth) into numpy arrays without torch and without running pickle code.

A checkpoint is a pickle, and an unrestricted unpickler runs whatever callables the file names, so a
downloaded .pth is arbitrary code. `_SafeUnpickler.find_class` therefore admits only the handful of
globals a state dict needs, and maps each to a local stand-in (never the real torch object); anything
else raises `UnsafeCheckpointError` before it can be called.

Two layouts are read:
  * zip (torch >= 1.6): `<folder>/data.pkl`, `<folder>/data/<key>` raw storages, `<folder>/byteorder`.
  * legacy (torch < 1.6): pickles of magic number, protocol 1001, sys_info, the object, the sorted
    storage keys, then per storage an int64 little-endian element count and the raw little-endian bytes.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = ["UnsafeCheckpointError", "load_torch_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage class -> element dtype (byte order added at read time). bfloat16 has no numpy dtype: its raw
# 16 bits are read as uint16 and widened to float32 afterwards.
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2", "DoubleStorage": "f8",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
# torch dtype globals some newer pickles reference; they come back as plain strings (inert objects).
_TORCH_DTYPE_NAMES = {
    "float32", "float", "float16", "half", "bfloat16", "float64", "double", "int64", "long",
    "int32", "int", "int16", "short", "int8", "uint8", "bool",
}
_REBUILD_NAMES = {"_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter"}
# Keys under which training scripts commonly wrap the tensors of a state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The checkpoint asks for a global outside the tensor allow-list (it could run code)."""


class _StorageRef:
  """A storage named in the pickle; its bytes are read after unpickling (legacy files store them last)."""
  __slots__ = ("kind", "key", "numel")

  def __init__(self, kind: str, key: str, numel: int):
    self.kind, self.key, self.numel = kind, key, numel


class _TensorRef:
  """Tensor metadata from a rebuild call; turned into an array once all storages are read."""
  __slots__ = ("storage", "offset", "size", "stride")

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _SafeUnpickler(pickle.Unpickler):
  """Unpickler that resolves only allow-listed globals, each to an inert local stand-in."""

  def __init__(self, file, path: str):
    super().__init__(file, encoding="utf-8")
    self.path = path
    self.storages: dict[str, _StorageRef] = {}

  def find_class(self, module: str, name: str):
    if module == "torch._utils" and name in _REBUILD_NAMES:
      # A fresh closure per lookup, so a crafted BUILD opcode cannot alter a shared function.
      if name == "_rebuild_parameter":
        return lambda data, *_: data
      return lambda storage, offset, size, stride, *_: self._rebuild(storage, offset, size, stride)
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "torch" and (name in _STORAGE_DTYPES or name in _TORCH_DTYPE_NAMES):
      return name
    raise UnsafeCheckpointError(
        f"{self.path}: refuses global {module}.{name} (only tensor, storage and OrderedDict globals "
        "are allowed; this file may contain code, or be a full-model pickle rather than a state dict)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
      raise UnsafeCheckpointError(f"{self.path}: refuses persistent id {str(pid)[:80]!r}")
    kind, key, numel = pid[1], str(pid[2]), pid[4]
    if len(pid) == 6 and pid[5] is not None:
      raise ValueError(f"{self.path}: legacy storage views are not supported")
    if kind not in _STORAGE_DTYPES or not isinstance(numel, int) or numel < 0:
      raise ValueError(f"{self.path}: bad storage reference {str(pid)[:80]!r}")
    ref = self.storages.setdefault(key, _StorageRef(kind, key, numel))
    if ref.kind != kind:
      raise ValueError(f"{self.path}: storage {key} is used with two types")
    return ref

  def _rebuild(self, storage, offset, size, stride) -> _TensorRef:
    ints = lambda xs: isinstance(xs, (tuple, list)) and all(isinstance(x, int) for x in xs)
    if not (isinstance(storage, _StorageRef) and isinstance(offset, int) and ints(size)
            and ints(stride) and len(size) == len(stride)):
      raise ValueError(f"{self.path}: malformed tensor record")
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _to_array(ref: _TensorRef, storages: dict[str, np.ndarray], path: str) -> np.ndarray:
  """Copies a (possibly strided, offset) view of its storage into a fresh contiguous native array."""
  flat = storages.get(ref.storage.key)
  if flat is None:
    raise ValueError(f"{path}: storage {ref.storage.key} is missing from the file")
  if ref.offset < 0 or any(n < 0 for n in ref.size) or any(s < 0 for s in ref.stride):
    raise ValueError(f"{path}: negative tensor offset, size or stride")
  if 0 in ref.size:
    out = np.empty(ref.size, flat.dtype)
  else:
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= flat.size:  # bounds check: as_strided would otherwise read foreign memory
      raise ValueError(f"{path}: tensor reaches element {last} of a {flat.size}-element storage")
    strides = tuple(s * flat.itemsize for s in ref.stride)
    out = np.lib.stride_tricks.as_strided(flat[ref.offset:], ref.size, strides).copy()
  if ref.storage.kind == "BFloat16Storage":
    return (out.astype(np.uint32) << 16).view(np.float32)
  return out.astype(out.dtype.newbyteorder("="), copy=False)


def _collect(obj, prefix: str, out: dict) -> None:
  """Flattens nested dicts/lists of tensors into '.'-joined keys; other leaves (ints, strings) are dropped."""
  if isinstance(obj, _TensorRef):
    out[prefix] = obj
  elif isinstance(obj, dict):
    for key, value in obj.items():
      _collect(value, f"{prefix}.{key}" if prefix else str(key), out)
  elif isinstance(obj, (list, tuple)):
    for i, value in enumerate(obj):
      _collect(value, f"{prefix}.{i}" if prefix else str(i), out)


def _unwrap(obj):
  """Returns the tensor dict of `{'state_dict': {...}, 'epoch': 3}`-style wrappers, else `obj`."""
  if isinstance(obj, dict):
    for key in _WRAPPER_KEYS:
      if isinstance(obj.get(key), dict):
        return obj[key]
  return obj


def _read_storage(raw: bytes, ref: _StorageRef, byteorder: str, path: str) -> np.ndarray:
  dtype = np.dtype(_STORAGE_DTYPES[ref.kind]).newbyteorder("<" if byteorder == "little" else ">")
  if len(raw) < ref.numel * dtype.itemsize:
    raise ValueError(f"{path}: storage {ref.key} is truncated")
  return np.frombuffer(raw, dtype, count=ref.numel)


def _load_zip(path: str):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise ValueError(f"{path}: zip file without a single '<folder>/data.pkl' (not a torch.save file)")
    folder = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if folder + "byteorder" in names:
      byteorder = archive.read(folder + "byteorder").decode().strip()
    with archive.open(pickles[0]) as stream:
      unpickler = _SafeUnpickler(stream, path)
      obj = unpickler.load()
    storages = {key: _read_storage(archive.read(f"{folder}data/{key}"), ref, byteorder, path)
                for key, ref in unpickler.storages.items()}
  return obj, storages


def _load_legacy(path: str):
  with open(path, "rb") as stream:
    def header():  # the small pickles around the object go through the same restricted unpickler
      return _SafeUnpickler(stream, path).load()

    try:
      magic = header()
    except UnsafeCheckpointError:
      raise  # a refused global is the news, not "not a checkpoint"
    except Exception as error:
      raise ValueError(f"{path}: not a PyTorch checkpoint (neither zip nor legacy pickle)") from error
    if magic != _LEGACY_MAGIC:
      raise ValueError(f"{path}: not a PyTorch checkpoint (bad legacy magic number)")
    if header() != _LEGACY_PROTOCOL:
      raise ValueError(f"{path}: unsupported legacy protocol version")
    header()  # sys_info; legacy storages are little-endian whatever it says
    unpickler = _SafeUnpickler(stream, path)
    obj = unpickler.load()
    storages = {}
    for key in header():
      ref = unpickler.storages.get(str(key))
      if ref is None:
        raise ValueError(f"{path}: storage {key} is not referenced by the pickle")
      (count,) = struct.unpack("<q", stream.read(8))
      nbytes = count * np.dtype(_STORAGE_DTYPES[ref.kind]).itemsize
      storages[ref.key] = _read_storage(stream.read(nbytes), ref, "little", path)
  return obj, storages


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads a torch.save'd state dict as {name: contiguous native-endian numpy array}.

  Reads both the zip and the legacy layout, unwraps `state_dict`/`model_state_dict`/`model` wrappers and
  flattens nested containers with '.'. bfloat16 tensors come back as float32. Raises
  `UnsafeCheckpointError` if the pickle names any global beyond tensors, storages and OrderedDict.
  """
  path = os.fspath(path)
  with open(path, "rb") as stream:
    is_zip = stream.read(4) == b"PK\x03\x04"  # as torch decides; legacy data could end like a zip
  obj, storages = _load_zip(path) if is_zip else _load_legacy(path)
  refs: dict[str, _TensorRef] = {}
  _collect(_unwrap(obj), "", refs)
  if not refs:
    raise ValueError(f"{path}: no tensors found in the checkpoint")
  return {name: _to_array(ref, storages, path) for name, ref in refs.items()}
