"""Split manifests: round trip equals the default load, remix, group splits, no silent overwrite."""

import collections
import json
import shutil

import numpy as np
import pytest

from jaxmed import split as split_cli
from jaxmed.data import discover, manifest
from conftest import write_label_tree


def _load(spec, **kw):
  return discover.load_dataset(str(spec), 16, seed=0, val_fraction=0.15, **kw)


def _rows(path):
  lines = path.read_text(encoding="utf-8").splitlines()
  return json.loads(lines[0]), [json.loads(l) for l in lines[1:]]


def test_default_manifest_loads_exactly_the_default_data(label_tree, tmp_path):
  (label_tree / "train" / "a" / "broken.jpg").write_text("not a jpeg")  # shifts indices if mishandled
  out = label_tree.parent / "split.jsonl"
  assert split_cli.main([str(label_tree), "--out", str(out), "--seed", "0", "--val-fraction", "0.15"]) == 0
  header, rows = _rows(out)
  assert header["classes"] == ["a", "b", "c"] and set(rows[0]) >= {"file", "label", "split", "sha256"}
  assert rows[0]["file"].startswith("data/train/a/")  # relative to the manifest's folder
  assert [r["split"] for r in rows if "broken" in r["file"]] == ["excluded"]
  classes, plain, record = _load(label_tree)
  m_classes, via, m_record = _load(label_tree, manifest=str(out))
  assert m_classes == classes and m_record["counts"] == record["counts"]
  for s in ("train", "val", "test"):
    assert via[s].paths == plain[s].paths  # same files, same order
    assert np.array_equal(via[s].labels, plain[s].labels)
    assert np.array_equal(via[s].images, plain[s].images)
  moved = tmp_path / "moved"  # data and manifest moved together still load the same images
  shutil.copytree(label_tree, moved / "data")
  shutil.copy(out, moved / "split.jsonl")
  _, after_move, _ = _load(moved / "data", manifest=str(moved / "split.jsonl"))
  assert after_move["train"].paths[0].startswith(str(moved))
  assert np.array_equal(after_move["val"].images, plain["val"].images)
  # an existing manifest is never overwritten silently
  before = out.read_text(encoding="utf-8")
  assert split_cli.main([str(label_tree), "--out", str(out), "--seed", "1"]) == 2
  assert out.read_text(encoding="utf-8") == before
  assert split_cli.main([str(label_tree), "--out", str(out), "--seed", "1", "--force"]) == 0
  assert out.read_text(encoding="utf-8") != before


def test_manifest_reports_changed_files(label_tree, tmp_path):
  out = tmp_path / "split.jsonl"
  assert split_cli.main([str(label_tree), "--out", str(out)]) == 0
  victim = label_tree / "test" / "b" / "b_000.png"
  victim.write_bytes((label_tree / "test" / "b" / "b_001.png").read_bytes())
  with pytest.raises(ValueError, match="b_000.png"):  # a manifest replays exactly, or not at all
    _load(label_tree, manifest=str(out))


def test_remix_drops_duplicates_and_keeps_stratification(tmp_path):
  root = write_label_tree(tmp_path / "d", {"train": {"a": 10, "b": 6}, "test": {"a": 3, "b": 2}})
  copy = lambda src, dst: (root / dst).write_bytes((root / src).read_bytes())
  copy("train/a/a_000.png", "test/a/dup_same_label.png")     # duplicate: one copy is dropped
  copy("train/b/b_000.png", "test/a/dup_other_label.png")    # conflicting labels: both dropped
  out = tmp_path / "remix.jsonl"
  assert split_cli.main([str(root), "--out", str(out), "--remix", "0.8,0.1,0.1", "--seed", "3"]) == 0
  _, rows = _rows(out)
  counts = collections.Counter((r["split"], r["label"]) for r in rows)
  # Pool after dropping: a = 10 + 3 = 13 (dup_same_label dropped, dup_other_label dropped),
  # b = 6 + 2 - 1 = 7 (b_000 dropped with its conflicting copy).
  # a: test round(1.3)=1, val round(12 * 0.1/0.9)=round(1.33)=1, train 11.
  # b: test round(0.7)=1, val round(6 * 0.111)=round(0.67)=1, train 5.
  assert counts == {("train", "a"): 11, ("val", "a"): 1, ("test", "a"): 1,
                    ("train", "b"): 5, ("val", "b"): 1, ("test", "b"): 1, ("excluded", "a"): 2,
                    ("excluded", "b"): 1}
  kept = [r["sha256"] for r in rows if r["split"] != "excluded"]
  assert len(kept) == len(set(kept))
  classes, splits, record = _load(root, manifest=str(out))
  assert record["counts"] == {"train": [11, 5], "val": [1, 1], "test": [1, 1]}


def test_group_regex_keeps_patients_whole(tmp_path):
  root = tmp_path / "d"
  rng = np.random.default_rng(0)
  from PIL import Image
  for patient in range(12):
    label = "sick" if patient % 3 == 0 else "well"
    (root / "train" / label).mkdir(parents=True, exist_ok=True)
    for k in range(1 + patient % 4):
      Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
          root / "train" / label / f"person{patient}_scan{k}.png")
  for args in ([], ["--remix", "0.6,0.2,0.2"]):
    out = tmp_path / f"g{len(args)}.jsonl"
    assert split_cli.main([str(root), "--out", str(out), "--group-regex", r"(person\d+)_",
                           "--val-fraction", "0.3", *args]) == 0
    _, rows = _rows(out)
    splits_of = collections.defaultdict(set)
    for r in rows:
      splits_of[r["file"].split("/")[-1].split("_")[0]].add(r["split"])
    assert len(splits_of) == 12 and all(len(s) == 1 for s in splits_of.values())
    used = {s for v in splits_of.values() for s in v}
    assert {"train", "val"} <= used and ("test" in used) == bool(args)
    labels_in_val = {r["label"] for r in rows if r["split"] == "val"}
    assert labels_in_val == {"sick", "well"}  # stratified by each group's label


def test_manifest_header_and_unknown_label_errors(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"jaxmed_manifest": 1, "classes": ["a", "b"]}\n'
                 '{"file": "x.png", "label": "zebra", "split": "train", "sha256": null}\n')
  with pytest.raises(ValueError, match="zebra"):
    manifest.read(bad)
  bad.write_text("file,label,split\n")
  with pytest.raises(ValueError, match="not a jaxmed manifest"):
    manifest.read(bad)


def test_relative_files_outside_the_manifest_folder_are_stored_absolute(tmp_path, monkeypatch):
  # A caller's relative path means its working directory; stored as given, it would be read
  # against the manifest's folder (benchmarks/fixed_costs.py with JAXMED_SHARED=../shared did so).
  data, elsewhere = tmp_path / "work" / "data", tmp_path / "scratch"
  data.mkdir(parents=True)
  (data / "x.png").write_bytes(b"")
  monkeypatch.chdir(tmp_path / "work")
  out = elsewhere / "m.jsonl"
  manifest.write(out, ["a"], [{"file": "data/x.png", "label": "a", "split": "train"}],
                 source="data", method={})
  _, rows = _rows(out)
  assert rows[0]["file"] == str(data / "x.png")
  inside = data / "m.jsonl"  # below the manifest's folder: relative to it, as before
  manifest.write(inside, ["a"], [{"file": "data/x.png", "label": "a", "split": "train"}],
                 source="data", method={})
  assert _rows(inside)[1][0]["file"] == "x.png"
