"""Writes genuine torch.save files without torch, for the loader tests.

Mirrors torch/serialization.py: `_save` (zip: `<folder>/data.pkl`, `<folder>/byteorder`,
`<folder>/data/<key>`, 64-byte aligned records) and `_legacy_save` (magic, protocol, sys_info, object,
sorted storage keys, then each storage as int64 numel + raw bytes). Storages are pickled by persistent id
as torch does, ('storage', torch.<X>Storage, key, 'cpu', numel[, view_metadata]), and tensors reduce to
torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict()). The torch
globals are emitted as GLOBAL opcodes by name, so nothing here imports torch.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_KINDS = {  # numpy dtype -> torch storage class name
    "float32": "FloatStorage", "float16": "HalfStorage", "float64": "DoubleStorage",
    "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
    "uint8": "ByteStorage", "bool": "BoolStorage",
}


class Global:
  """A module-level name to pickle as a GLOBAL opcode without importing its module."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle's save_reduce insists on a callable; never actually called
    raise TypeError(f"{self.module}.{self.name} is a pickling stand-in")


class Storage:
  """A flat torch storage: 1-D numpy data plus its torch class (bfloat16 data is raw uint16 bits)."""

  def __init__(self, data: np.ndarray, kind: str | None = None):
    self.data = np.ascontiguousarray(data).reshape(-1)
    self.kind = kind or STORAGE_KINDS[self.data.dtype.name]


class Tensor:
  """A torch tensor as its storage plus offset, size and stride (all in elements)."""

  def __init__(self, storage, offset=0, size=None, stride=None, parameter=False):
    self.storage, self.offset, self.parameter = storage, offset, parameter
    self.size = tuple(size if size is not None else (storage.data.size,))
    self.stride = tuple(stride if stride is not None else _contiguous_strides(self.size))

  def __reduce_ex__(self, protocol):
    rebuilt = (Global("torch._utils", "_rebuild_tensor_v2"),
               (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))
    if not self.parameter:
      return rebuilt
    data = Tensor(self.storage, self.offset, self.size, self.stride)
    return (Global("torch._utils", "_rebuild_parameter"), (data, True, collections.OrderedDict()))


def _contiguous_strides(size):
  strides, step = [], 1
  for n in reversed(size):
    strides.append(step)
    step *= max(n, 1)
  return tuple(reversed(strides))


def tensor(array: np.ndarray, parameter: bool = False) -> Tensor:
  """A contiguous tensor owning a fresh storage holding `array`."""
  array = np.asarray(array)
  return Tensor(Storage(array), 0, array.shape, None, parameter)


class _TorchPickler(pickle._Pickler):  # the Python pickler: its dispatch table can be extended
  dispatch = dict(pickle._Pickler.dispatch)

  def __init__(self, file, legacy: bool):
    super().__init__(file, protocol=2)
    self.legacy, self.storages = legacy, {}

  def save_torch_global(self, obj):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    self.memoize(obj)

  dispatch[Global] = save_torch_global

  def persistent_id(self, obj):
    if not isinstance(obj, Storage):
      return None
    key = next((k for k, s in self.storages.items() if s is obj), None)
    if key is None:  # legacy keys are str(storage._cdata) (big numbers), zip keys count up from 0
      key = str(94000000000000 + 16 * len(self.storages)) if self.legacy else str(len(self.storages))
      self.storages[key] = obj
    pid = ("storage", Global("torch", obj.kind), key, "cpu", obj.data.size)
    return pid + (None,) if self.legacy else pid


def _pickle_object(obj, legacy: bool):
  buffer = io.BytesIO()
  pickler = _TorchPickler(buffer, legacy)
  pickler.dump(obj)
  return buffer.getvalue(), pickler.storages


def _write_aligned(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
  """Stored record whose data starts on a 64-byte boundary, padded with an 'FB' extra field like torch."""
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  header_end = archive.fp.tell() + 30 + len(name.encode()) + 4
  pad = -header_end % 64
  info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
  archive.writestr(info, data, compress_type=zipfile.ZIP_STORED)


def save_zip(obj, path, folder: str = "archive", byteorder: str = "little") -> None:
  """torch >= 1.6 format; `byteorder='big'` writes the storages as a big-endian machine would."""
  data, storages = _pickle_object(obj, legacy=False)
  with zipfile.ZipFile(path, "w") as archive:
    _write_aligned(archive, f"{folder}/data.pkl", data)
    _write_aligned(archive, f"{folder}/byteorder", byteorder.encode())
    for key in sorted(storages):
      array = storages[key].data
      array = array.astype(array.dtype.newbyteorder("<" if byteorder == "little" else ">"))
      _write_aligned(archive, f"{folder}/data/{key}", array.tobytes())
    _write_aligned(archive, f"{folder}/version", b"3\n")
    _write_aligned(archive, f"{folder}/.data/version", b"3\n")


def save_legacy(obj, path) -> None:
  """torch < 1.6 format (also `_use_new_zipfile_serialization=False`)."""
  data, storages = _pickle_object(obj, legacy=True)
  sys_info = dict(protocol_version=1001, little_endian=sys.byteorder == "little",
                  type_sizes=dict(short=2, int=4, long=4))
  with open(path, "wb") as file:
    for header in (LEGACY_MAGIC, 1001, sys_info):
      pickle.dump(header, file, protocol=2)
    file.write(data)
    keys = sorted(storages)
    pickle.dump(keys, file, protocol=2)
    for key in keys:
      array = storages[key].data
      file.write(struct.pack("<q", array.size))
      file.write(array.astype(array.dtype.newbyteorder("<")).tobytes())


def save_raw_pickle(obj, path, legacy: bool) -> None:
  """Any picklable object (e.g. a malicious one) placed where torch puts the object pickle."""
  data = pickle.dumps(obj, protocol=2)
  if legacy:
    with open(path, "wb") as file:
      for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001}):
        pickle.dump(header, file, protocol=2)
      file.write(data)
      pickle.dump([], file, protocol=2)
  else:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", data)
