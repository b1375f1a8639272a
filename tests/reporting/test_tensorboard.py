"""jaxmed's own TensorBoard event files, checked against tensorboardX's protocol buffer classes
(an independent decoder) and the CRC-32C check value of the Castagnoli polynomial."""


import pytest

from jaxmed.reporting import tensorboard


def test_crc32c_matches_the_published_check_value():
  assert tensorboard.crc32c(b"123456789") == 0xE3069283  # RFC 3720, appendix B.4
  assert tensorboard.crc32c(b"") == 0


def test_scalars_decode_with_tensorboards_own_event_proto(tmp_path):
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  writer = tensorboard.ScalarWriter(tmp_path / "tb")
  writer.add_scalar("train/loss", 0.25, 3)
  writer.add_scalar("val/accuracy", 0.875, 300)
  writer.close()
  (path,) = (tmp_path / "tb").iterdir()
  assert path.name.startswith("events.out.tfevents.")
  events = [event_pb2.Event.FromString(r) for r in tensorboard.read_records(path)]
  assert events[0].file_version == "brain.Event:2" and events[0].wall_time > 1.7e9
  got = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
  assert got == [(3, "train/loss", 0.25), (300, "val/accuracy", 0.875)]


def test_a_damaged_record_is_refused(tmp_path):
  writer = tensorboard.ScalarWriter(tmp_path)
  writer.add_scalar("x", 1.0, 1)
  writer.close()
  (path,) = tmp_path.iterdir()
  blob = bytearray(path.read_bytes())
  blob[-6] ^= 0xFF  # inside the last record's data
  path.write_bytes(bytes(blob))
  with pytest.raises(ValueError, match="damaged"):
    tensorboard.read_records(path)
