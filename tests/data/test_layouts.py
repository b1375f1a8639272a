"""Test-only trees (an external test set), the full blood-cell download, and what is left out
being said on the console: empty class folders and refused archive members."""

import types
import zipfile

import pytest

from jaxmed import split as split_cli
from jaxmed.data import archive, discover, folder
from jaxmed.data.load import load_split
from conftest import write_label_tree

CELLS = {"EOSINOPHIL": 2, "NEUTROPHIL": 3}


def _kaggle_clutter(root):
  """The blood-cell archive's other half: unlabelled JPEGs, XML annotations and a CSV."""
  other = root / "dataset-master" / "dataset-master"
  write_label_tree(other, {"JPEGImages": {"BloodImage": 3}})
  (other / "Annotations").mkdir()
  (other / "Annotations" / "BloodImage_00000.xml").write_text("<annotation/>")
  (other / "labels.csv").write_text("Image,Category\n")


def test_test_only_tree_is_found_by_split_names(tmp_path):
  write_label_tree(tmp_path / "images", {"TEST": CELLS, "TEST_SIMPLE": {"EOSINOPHIL": 1, "NEUTROPHIL": 1}})
  _kaggle_clutter(tmp_path)
  found = discover.discover(tmp_path)
  assert found.classes == ["EOSINOPHIL", "NEUTROPHIL"]
  assert list(found.splits) == ["test", "test_simple"] and found.extra_splits == ["test_simple"]
  assert found.splits["test"].labels == [0, 0, 1, 1, 1]
  assert found.layout.startswith("split folders in images") and "no train" in found.layout
  assert any("JPEGImages" in m for m in found.ignored_messages())
  run = types.SimpleNamespace(classes=["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"], image_size=16)
  test = load_split(run, str(tmp_path), "test")  # what `jaxmed.evaluate --data ROOT` reads
  assert len(test) == 5 and sorted(test.labels.tolist()) == [0, 0, 2, 2, 2]
  assert len(load_split(run, str(tmp_path), "test_simple")) == 2
  with pytest.raises(ValueError) as e:  # training needs train, and says so in one line
    discover.load_dataset(str(tmp_path), 16, seed=0, val_fraction=0.2)
  assert f"{tmp_path} has splits test, test_simple but no train split:" in str(e.value)
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="no train split"):
    folder.scan(tmp_path)


@pytest.mark.parametrize("name", ["Testing", "test", "VAL"])
def test_any_split_alias_alone_is_a_split(tmp_path, name):
  write_label_tree(tmp_path / "dl", {name: {"x": 1, "y": 1}})
  found = discover.discover(tmp_path)
  assert found.classes == ["x", "y"] and list(found.splits) == [folder.layout.split_name(name)]


def test_full_blood_cell_download_from_its_top_folder(tmp_path):
  top = tmp_path / "dataset2-master"
  write_label_tree(top / "dataset2-master" / "images",
                   {"TRAIN": CELLS, "TEST": CELLS, "TEST_SIMPLE": {"EOSINOPHIL": 1, "NEUTROPHIL": 1}})
  _kaggle_clutter(tmp_path)
  for root in (top, tmp_path):
    found = discover.discover(root)
    assert found.classes == ["EOSINOPHIL", "NEUTROPHIL"]
    assert list(found.splits) == ["train", "test", "test_simple"]
    assert found.layout.endswith("dataset2-master/images")


def test_split_command_refuses_a_test_only_tree_in_one_line(tmp_path, capsys):
  write_label_tree(tmp_path / "images", {"TEST": CELLS})
  assert split_cli.main([str(tmp_path), "--out", str(tmp_path / "m.jsonl")]) == 2
  err = capsys.readouterr().err.strip()
  assert "no train split" in err and "\n" not in err


def _evil_zip(path, members):
  with zipfile.ZipFile(path, "w") as zf:
    for name, data in members.items():
      zf.writestr(name, data)
    zf.writestr("../evil.png", members["train/a/a_000.png"])
    zf.writestr("/abs/train/a/abs.png", members["train/a/a_000.png"])
    zf.writestr("train/ghost/", b"")  # an empty class folder, as a folder entry
  return path


def _members(root):
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_split_command_warns_about_empty_classes_and_refused_members(tmp_path, capsys):
  root = write_label_tree(tmp_path / "d", {"train": {"a": 4, "b": 4}, "test": {"a": 1, "b": 1}})
  (root / "train" / "ghost").mkdir()
  (root / "test" / "ghost").mkdir()
  assert split_cli.main([str(root), "--out", str(tmp_path / "m.jsonl")]) == 0
  err = capsys.readouterr().err.splitlines()
  assert err == ["warning: skipped empty class folder(s): test/ghost, train/ghost"]
  _evil_zip(tmp_path / "x.zip", _members(root))
  assert split_cli.main([str(tmp_path / "x.zip"), "--out", str(tmp_path / "z.jsonl")]) == 0
  err = capsys.readouterr().err.splitlines()
  assert err[0] == "warning: skipped empty class folder(s): train/ghost"
  assert err[1].startswith(f"warning: refused 2 archive member(s) of {tmp_path / 'x.zip'}: ")
  assert "../evil.png ('..' in path)" in err[1] and "/abs/train/a/abs.png (absolute path)" in err[1]
  assert len(err) == 2


def test_load_record_keeps_details_and_one_line_warnings(tmp_path):
  root = write_label_tree(tmp_path / "d", {"train": {"a": 4, "b": 4}})
  _, _, record = discover.load_dataset(str(_evil_zip(tmp_path / "x.zip", _members(root))), 16,
                                       seed=0, val_fraction=0.25)
  assert len(record["warnings"]) == 2
  assert record["warnings"][0] == "warning: skipped empty class folder(s): train/ghost"
  assert "refused 2 archive member(s)" in record["warnings"][1]
  ignored = " ".join(record["ignored"])
  assert "train/ghost/ (empty class folder: no images)" in ignored and "../evil.png" in ignored


def test_oversized_and_overcompressed_members_are_refused(tmp_path, monkeypatch):
  with zipfile.ZipFile(tmp_path / "b.zip", "w", zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("train/a/big.png", b"\0" * 50_000)
  monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 10_000)
  _, refused = archive.list_members(tmp_path / "b.zip")
  assert len(refused) == 1 and "zip bomb" in refused[0][1]
  with pytest.raises(ValueError, match="refused archive member"):
    archive.read_bytes(f"{tmp_path / 'b.zip'}::train/a/big.png")
  monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 1 << 30)
  monkeypatch.setattr(archive, "MAX_RATIO_FROM", 10_000)
  monkeypatch.setattr(archive, "MAX_RATIO", 20)
  _, refused = archive.list_members(tmp_path / "b.zip")
  assert len(refused) == 1 and "compression ratio" in refused[0][1]
