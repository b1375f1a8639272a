import numpy as np
from PIL import Image

from jaxmed.data import folder
from conftest import write_label_tree


def test_scan_finds_splits_classes_and_skips_non_images(tmp_path):
  root = write_label_tree(tmp_path, {"Training": {"x": 3, "y": 2}, "Testing": {"y": 1}})
  (root / "Training" / "x" / "notes.csv").write_text("a,b")
  (root / "Training" / "x" / ".DS_Store").write_bytes(b"\0")
  (root / "Training" / ".ipynb_checkpoints").mkdir()
  classes, lists = folder.scan(root)
  assert classes == ["x", "y"]
  assert sorted(lists) == ["test", "train"]
  assert lists["train"].labels == [0, 0, 0, 1, 1]
  assert lists["test"].labels == [1]  # 'y' keeps index 1 although 'x' is absent from test
  assert all(p.suffix == ".png" for p in lists["train"].paths)


def test_decode_handles_modes_and_reports_bad_files_without_aborting(tmp_path):
  d = tmp_path / "train" / "k"
  d.mkdir(parents=True)
  Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(d / "a16.png")
  Image.new("RGBA", (20, 10), (255, 0, 0, 0)).save(d / "b_rgba.png")
  Image.new("P", (10, 10), 3).save(d / "c_palette.png")
  Image.new("CMYK", (10, 10), (0, 255, 0, 0)).save(d / "d_cmyk.jpg")
  (d / "e_text.jpg").write_text("not an image")
  (d / "f_empty.png").write_bytes(b"")
  classes, lists = folder.scan(tmp_path)
  split, errors = folder.decode_files(lists["train"], 16)
  assert split.images.shape == (4, 16, 16, 3) and split.images.dtype == np.uint8
  assert len(errors) == 2 and any("e_text.jpg" in e for e in errors)
  assert any("f_empty.png" in e for e in errors)
  a16 = split.images[0]
  assert a16.min() <= 16 and a16.max() >= 240  # 16-bit range stretched, not clipped to white
  assert split.images[1].max() == 0           # fully transparent red composited on black


def test_missing_train_split_is_a_clear_error(tmp_path):
  (tmp_path / "images").mkdir()
  try:
    folder.scan(tmp_path)
  except ValueError as e:
    assert str(tmp_path) in str(e) and "train" in str(e)
  else:
    raise AssertionError("expected ValueError")
