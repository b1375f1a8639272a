"""Dataset discovery: layouts people download, archives read in place, .npz, tfds, bad input."""

import io
import os
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from jaxmed.data import archive, discover, folder
from conftest import shared_path, write_label_tree


def _png(path, value=0, size=(12, 12), mode="RGB"):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new(mode, size, value).save(path)


def _load(spec, **kw):
  return discover.load_dataset(str(spec), 16, seed=0, val_fraction=0.25, **kw)


def test_nested_layout_with_extra_split_and_clutter(tmp_path):
  base = tmp_path / "dataset2-master" / "dataset2-master" / "images"
  write_label_tree(base, {"TRAIN": {"EOSINOPHIL": 4, "NEUTROPHIL": 4},
                          "TEST": {"EOSINOPHIL": 2, "NEUTROPHIL": 2},
                          "TEST_SIMPLE": {"EOSINOPHIL": 1, "NEUTROPHIL": 1}})
  other = tmp_path / "dataset-master" / "dataset-master"
  write_label_tree(other, {"JPEGImages": {"unlabelled": 3}})  # images, but no split folders
  (other / "labels.csv").write_text("image,label\n")
  (tmp_path / "analysis.ipynb").write_text("{}")
  (base / "TRAIN" / ".DS_Store").write_bytes(b"\0")
  _png(tmp_path / "__MACOSX" / "dataset2-master" / "._x.png")
  (base / "TRAIN" / "EOSINOPHIL" / ".ipynb_checkpoints").mkdir()
  found = discover.discover(tmp_path)
  assert found.classes == ["EOSINOPHIL", "NEUTROPHIL"]
  assert list(found.splits) == ["train", "test", "test_simple"] and found.extra_splits == ["test_simple"]
  assert found.splits["train"].labels == [0] * 4 + [1] * 4
  ignored = " ".join(found.ignored_messages())
  for name in ("labels.csv", "analysis.ipynb", ".DS_Store", "__MACOSX", "JPEGImages"):
    assert name in ignored
  classes, splits, record = _load(tmp_path)
  assert sorted(splits) == ["test", "train", "val"] and record["extra_splits"] == {"test_simple": 2}
  assert record["counts"]["val"] == [1, 1] and record["counts"]["test"] == [2, 2]


def test_split_aliases_case_insensitive_and_wrapper_pool(tmp_path):
  write_label_tree(tmp_path / "a", {"Training": {"x": 2, "y": 2}, "VALIDATION": {"x": 1, "y": 1},
                                    "Testing": {"x": 1, "y": 1}})
  assert list(discover.discover(tmp_path / "a").splits) == ["train", "val", "test"]
  # Only class folders, below a single wrapper folder: one unsplit pool used as train.
  write_label_tree(tmp_path / "b", {"download": {"x": 4, "y": 4}})
  found = discover.discover(tmp_path / "b")
  assert list(found.splits) == ["train"] and found.classes == ["x", "y"] and "pool" in found.layout
  classes, splits, record = _load(tmp_path / "b")
  assert record["counts"] == {"train": [3, 3], "val": [1, 1]}


def _tree_bytes(tmp_path):
  root = write_label_tree(tmp_path / "src", {"train": {"a": 3, "b": 3}, "test": {"a": 1, "b": 1}})
  return {str(p.relative_to(root)).replace(os.sep, "/"): p.read_bytes()
          for p in sorted(root.rglob("*.png"))}, root


def test_zip_and_tar_read_in_place_equal_the_folder(tmp_path):
  members, root = _tree_bytes(tmp_path)
  with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
    for name, data in members.items():
      zf.writestr("d/" + name, data)
    zf.writestr("__MACOSX/d/._x.png", b"junk")
  with tarfile.open(tmp_path / "d.tar.gz", "w:gz") as tf:
    for name, data in members.items():
      info = tarfile.TarInfo("./" + name)
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))
  _, want, _ = _load(root)
  for arc in ("d.zip", "d.tar.gz"):
    classes, splits, record = _load(tmp_path / arc)
    assert classes == ["a", "b"] and "::" in splits["train"].paths[0]
    for s in ("train", "val", "test"):
      assert np.array_equal(splits[s].images, want[s].images)
      assert np.array_equal(splits[s].labels, want[s].labels)
  assert folder.decode_image(splits["train"].paths[0], 8).shape == (8, 8, 3)
  assert not list(tmp_path.glob("d/"))  # nothing extracted


def test_archive_traversal_entries_are_refused_and_listed(tmp_path):
  members, _ = _tree_bytes(tmp_path)
  target = tmp_path / "outside.png"
  _png(target)
  with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
    for name, data in members.items():
      zf.writestr(name, data)
    zf.writestr("../outside.png", members["train/a/a_000.png"])
    zf.writestr("/etc/train/a/abs.png", members["train/a/a_000.png"])
  with tarfile.open(tmp_path / "evil.tar", "w") as tf:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))
    link = tarfile.TarInfo("train/a/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, str(target)
    tf.addfile(link)
  for arc, bad in (("evil.zip", ("../outside.png", "/etc/train/a/abs.png")), ("evil.tar", ("link.png",))):
    found = discover.discover(tmp_path / arc)
    refs = [str(p) for fl in found.splits.values() for p in fl.paths]
    assert len(refs) == len(members) and not any(b in r for r in refs for b in bad)
    refused = [m for m in found.ignored_messages() if "refused" in m]
    assert len(refused) == len(bad) and all(any(b in m for m in refused) for b in bad)
  with pytest.raises(ValueError, match="refused"):
    archive.read_bytes(f"{tmp_path / 'evil.zip'}::../outside.png")


@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_medmnist_npz(tmp_path, label_shape):
  rng = np.random.default_rng(0)
  arrays = {}
  for s, n in (("train", 12), ("val", 4), ("test", 4)):
    arrays[f"{s}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 3
    arrays[f"{s}_labels"] = labels if label_shape == "flat" else labels[:, None]
  np.savez(tmp_path / "x.npz", **arrays)
  classes, splits, record = _load(tmp_path / "x.npz")
  assert classes == ["0", "1", "2"] and record["counts"]["train"] == [4, 4, 4]
  assert splits["val"].labels.tolist() == [0, 1, 2, 0]
  img = splits["train"].images[5]
  assert img.shape == (16, 16, 3) and np.array_equal(img[..., 0], img[..., 2])  # gray -> RGB


def test_real_breastmnist():
  path = shared_path("data", "medmnist", "breastmnist.npz")
  classes, splits, record = _load(path)
  assert classes == ["0", "1"]
  assert {s: sum(c) for s, c in record["counts"].items()} == {"train": 546, "val": 78, "test": 156}
  assert not record["skipped_files"]


def test_tfds_data_source_mocked(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  rng = np.random.default_rng(0)

  class Label:
    names = ["cat", "dog"]

  class Source(list):
    dataset_info = type("Info", (), {"features": {"label": Label()}})()

  data = {"train": Source({"image": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8), "label": i % 2}
                          for i in range(10))}
  monkeypatch.setattr(tfds, "data_source", lambda name, split, download: data[split])
  archive.tfds_record.cache_clear()
  try:
    classes, splits, record = _load("tfds:fake_pets:train")
  finally:
    archive.tfds_record.cache_clear()
  assert classes == ["cat", "dog"] and record["counts"] == {"train": [4, 4], "val": [1, 1]}
  assert splits["train"].paths[0] == "tfds:fake_pets:train[0]"


def test_tfds_without_tensorflow_datasets_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import` raises ImportError
  archive.tfds_record.cache_clear()
  with pytest.raises(ValueError, match=r'pip install "jaxmed\[tfds\]"'):
    _load("tfds:fake_pets")


def test_tfds_not_prepared_names_array_record(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")

  def not_prepared(name, split, download):
    raise FileNotFoundError(f"{name} not found")

  monkeypatch.setattr(tfds, "data_source", not_prepared)
  archive.tfds_record.cache_clear()
  try:
    with pytest.raises(ValueError, match="--file_format=array_record"):
      _load("tfds:fake_pets:train")
  finally:
    archive.tfds_record.cache_clear()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_inputs_are_reported_per_file(tmp_path, monkeypatch):
  d = tmp_path / "train"
  write_label_tree(tmp_path, {"train": {"gut": 3, "schädel_ü": 3}})
  (d / "gut" / "zero.png").write_bytes(b"")
  (d / "gut" / "text.jpg").write_text("not an image")
  buf = io.BytesIO()
  Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "JPEG")
  (d / "gut" / "truncated.jpg").write_bytes(buf.getvalue()[:300])
  Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(d / "gut" / "deep16.png")
  _png(d / "gut" / "rgba.png", (255, 0, 0, 128), mode="RGBA")
  _png(d / "schädel_ü" / "cmyk.jpg", (0, 255, 0, 0), mode="CMYK")
  _png(d / "schädel_ü" / "palette.png", 5, mode="P")
  _png(d / "schädel_ü" / "huge.png", 0, size=(300, 300))  # a "bomb" under the lowered guard
  (d / "empty_class").mkdir()
  os.symlink(tmp_path, d / "gut" / "loop")  # symlink loop: must terminate
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250 * 250)  # Pillow itself raises at 2x
  found = discover.discover(tmp_path)
  assert found.classes == ["gut", "schädel_ü"]  # the empty class folder is not a class
  assert any("empty_class" in m and "no images" in m for m in found.ignored_messages())
  assert any("loop" in m for m in found.ignored_messages())
  classes, splits, record = _load(tmp_path)
  skipped = " ".join(record["skipped_files"])
  assert len(record["skipped_files"]) == 4
  for name in ("zero.png", "text.jpg", "truncated.jpg", "huge.png"):
    assert name in skipped
  assert "decompression-bomb guard" in skipped and "not a recognised image" in skipped
  assert sum(len(s) for s in splits.values()) == 6 + 4  # 16-bit, RGBA, CMYK, palette decoded


def test_single_class_is_a_clear_error(tmp_path):
  write_label_tree(tmp_path, {"train": {"only": 3}})
  assert discover.discover(tmp_path).classes == ["only"]
  with pytest.raises(ValueError, match="at least 2"):
    _load(tmp_path)


def test_dedupe_cross_split_drops_test_copies_of_train(tmp_path):
  root = write_label_tree(tmp_path, {"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}}, seed=1)
  for name in ("a_000", "a_001"):
    (root / "test" / "a" / f"copy_{name}.png").write_bytes((root / "train" / "a" / f"{name}.png").read_bytes())
  _, plain, _ = _load(root)
  _, splits, record = _load(root, dedupe="cross_split")
  assert len(plain["test"]) == 6 and len(splits["test"]) == 4
  assert record["dedupe"]["num_dropped"] == 2
  assert all("copy_" in p for p in record["dedupe"]["dropped"]["test"])
  assert np.array_equal(splits["train"].images, plain["train"].images)


def test_split_folders_without_train_are_not_mistaken_for_classes(tmp_path):
  write_label_tree(tmp_path, {"test": {"x": 2, "y": 2}, "val": {"x": 1, "y": 1}})
  found = discover.discover(tmp_path)
  assert found.classes == ["x", "y"] and list(found.splits) == ["val", "test"]
  with pytest.raises(ValueError, match="has splits val, test but no train split"):
    _load(tmp_path)


def test_corrupt_archive_and_member_errors_are_clear(tmp_path):
  (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really a zip")
  with pytest.raises(ValueError, match="cannot read the archive"):
    discover.discover(tmp_path / "bad.zip")
  with zipfile.ZipFile(tmp_path / "ok.zip", "w") as zf:
    zf.writestr("train/a/x.png", b"")
  with pytest.raises(ValueError, match="cannot decode"):
    folder.decode_image(f"{tmp_path / 'ok.zip'}::train/a/missing.png", 8)
