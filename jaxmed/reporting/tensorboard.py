"""TensorBoard scalar events, written directly (`tensorboard --logdir WORKDIR` reads them).

tensorboardX imports torch when torch is installed (as in Colab and Kaggle): 1-2 s of CPU in
every run for a handful of scalars per epoch. The format is small: TFRecord framing (length,
masked CRC-32C of the length, data, masked CRC-32C of the data) around `Event` protocol buffers
(tensorflow/core/util/event.proto: wall_time=1 double, step=2 int64, file_version=3 string,
summary=5 {value=1 {tag=1 string, simple_value=2 float}}), encoded here by hand.
"""

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
    table.append(c)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    bits, n = n & 0x7F, n >> 7
    out.append(bits | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
  key = _varint((number << 3) | wire_type)
  return key + (_varint(len(payload)) + payload if wire_type == 2 else payload)


def event(wall_time: float, step: int = 0, *, scalars: dict | None = None,
          file_version: str | None = None) -> bytes:
  """One serialized Event."""
  data = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
  if file_version is not None:
    data += _field(3, 2, file_version.encode())
  if scalars:
    values = b"".join(_field(1, 2, _field(1, 2, tag.encode()) +
                             _field(2, 5, struct.pack("<f", float(value))))
                      for tag, value in scalars.items())
    data += _field(5, 2, values)
  return data


def record(data: bytes) -> bytes:
  """TFRecord framing of one serialized Event."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc(length)) + data +
          struct.pack("<I", masked_crc(data)))


def read_records(path) -> list[bytes]:
  """The serialized Events of an event file, each record's CRCs checked."""
  blob, records, at = Path(path).read_bytes(), [], 0
  while at < len(blob):
    (length,), (length_crc,) = struct.unpack_from("<Q", blob, at), struct.unpack_from("<I", blob, at + 8)
    if masked_crc(blob[at:at + 8]) != length_crc:
      raise ValueError(f"{path}: damaged record length at byte {at}")
    data = blob[at + 12:at + 12 + length]
    (data_crc,) = struct.unpack_from("<I", blob, at + 12 + length)
    if masked_crc(data) != data_crc:
      raise ValueError(f"{path}: damaged record at byte {at}")
    records.append(data)
    at += 16 + length
  return records


class ScalarWriter:
  """add_scalar/flush/close, the part of tensorboardX's SummaryWriter jaxmed uses."""

  def __init__(self, logdir):
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.file = open(logdir / name, "ab")
    self.file.write(record(event(time.time(), file_version="brain.Event:2")))

  def add_scalar(self, tag: str, value: float, step: int):
    self.file.write(record(event(time.time(), step, scalars={tag: value})))

  def flush(self):
    self.file.flush()

  def close(self):
    self.file.close()
