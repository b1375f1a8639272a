"""The dataset doctor finds duplicates, near duplicates, missing classes and shift, and advises."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from jaxmed.data import doctor, hashing
from jaxmed.doctor import main as doctor_main  # not `from jaxmed import doctor`: the API function
from jaxmed.evaluation import metrics


def _smooth(rng, size=96):
  """A smooth random picture (pHash needs structure, not pixel noise)."""
  small = Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8), "L")
  return small.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("doc")
  rng = np.random.default_rng(0)
  paths = {}
  for split, per_class in {"train": {"a": 14, "b": 14, "c": 6}, "test": {"a": 6, "b": 6}}.items():
    for name, n in per_class.items():
      (root / split / name).mkdir(parents=True)
      for i in range(n):
        p = root / split / name / f"{name}{i}.png"
        _smooth(rng).save(p)
        paths[f"{split}/{name}{i}"] = p
  # within train: an identical copy in the same class
  (root / "train" / "a" / "a0_copy.png").write_bytes(paths["train/a0"].read_bytes())
  # across splits with a label conflict: train/a/a1 reappears as test/b
  (root / "test" / "b" / "leak.png").write_bytes(paths["train/a1"].read_bytes())
  # near duplicate: train/b/b2 re-encoded as JPEG and resized, placed in test
  buf = io.BytesIO()
  Image.open(paths["train/b2"]).resize((70, 70)).save(buf, "JPEG", quality=75)
  (root / "test" / "b" / "reencoded.jpg").write_bytes(buf.getvalue())
  (root / "test" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
  return root


@pytest.fixture(scope="module")
def report(dataset):
  return doctor.examine(str(dataset), near_threshold=4, val_fraction=0.15)


def test_counts_duplicates_and_conflicts(report, dataset):
  assert report["splits"]["train"] == {"a": 15, "b": 14, "c": 6}
  assert report["splits"]["test"] == {"a": 6, "b": 8, "c": 0}
  assert report["missing_classes"] == {"test": ["c"]}
  assert report["imbalance"]["train"] == pytest.approx(15 / 6, abs=0.01)
  dup = report["duplicates"]
  assert dup["within_split"] == 1 and dup["within_split_extra_copies"] == 1
  assert len(dup["cross_split"]) == 1
  assert sorted(dup["cross_split"][0]["files"]) == sorted(
      [str(dataset / "train/a/a1.png"), str(dataset / "test/b/leak.png")])
  assert len(dup["label_conflicts"]) == 1 and sorted(dup["label_conflicts"][0]["labels"]) == ["a", "b"]
  assert report["unreadable"] == [str(dataset / "test/a/broken.png")]


def test_near_duplicate_survives_reencode_and_resize(report, dataset):
  near = report["duplicates"]["near_cross_split"]
  assert [sorted(p["files"]) for p in near] == [
      sorted([str(dataset / "train/b/b2.png"), str(dataset / "test/b/reencoded.jpg")])]


def test_advice_strings(report):
  advice = "\n".join(report["advice"])
  assert "1 test images also occur in train: evaluation is inflated; use --config.data.dedupe=cross_split" in advice
  assert "class c has 6 images: use transfer learning and class weights" in advice
  assert "class c has no images in test" in advice
  assert "validation split would leave 1 images of class c" in advice
  assert "different labels" in advice and "cannot be decoded" in advice


def test_json_output_keys(dataset, capsys):
  assert doctor_main([str(dataset), "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  for key in ("splits", "duplicates", "unreadable", "ignored", "advice", "shift", "images"):
    assert key in out
  for key in ("within_split", "cross_split", "near_cross_split"):
    assert key in out["duplicates"]
  assert {"sha256", "files"} <= set(out["duplicates"]["cross_split"][0])
  assert doctor_main([str(dataset)]) == 0
  table = capsys.readouterr().out
  assert "train" in table and "advice:" in table
  assert doctor_main([str(dataset / "nope")]) == 2


def test_shift_score_separates_different_acquisitions(tmp_path):
  rng = np.random.default_rng(1)
  for split, brightness, size in (("train", 0, 96), ("test", 90, 64)):
    for name in ("x", "y"):
      (tmp_path / split / name).mkdir(parents=True)
      for i in range(15):
        a = np.asarray(_smooth(rng, size), np.int32) // 2 + brightness
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(tmp_path / split / name / f"{i}.png")
  r = doctor.examine(str(tmp_path))
  assert r["shift"]["auc"] > 0.9 and any("tells train from test" in a for a in r["advice"])
  same = doctor.examine(str(tmp_path / "train"))  # a single pool: no second split to compare
  assert same["shift"] is None


def test_phash_is_stable_and_discriminative():
  rng = np.random.default_rng(2)
  images = [_smooth(rng, 128) for _ in range(20)]
  hashes = np.array([hashing.phash(np.asarray(im.convert("L").resize((32, 32)))) for im in images], np.uint64)
  d = hashing.hamming(hashes, hashes)
  assert d[~np.eye(20, dtype=bool)].min() > 8  # unrelated pictures are far apart
  shrunk = hashing.phash(np.asarray(images[0].resize((50, 50)).convert("L").resize((32, 32))))
  assert bin(int(hashes[0]) ^ shrunk).count("1") <= 4


def test_binary_auc_equals_sklearn_with_ties():
  """The doctor's shift score and evaluation's one-vs-rest AUC share metrics.binary_auc."""
  rng = np.random.default_rng(3)
  scores = rng.integers(0, 6, 200).astype(float)  # 6 distinct values: ties everywhere
  positive = rng.random(200) < 0.3 + 0.08 * scores
  assert metrics.binary_auc(scores, positive) == pytest.approx(skm.roc_auc_score(positive, scores))
  assert metrics.binary_auc(scores, positive.astype(float)) == metrics.binary_auc(scores, positive)
  assert metrics.binary_auc([0.5, 0.5, 0.1, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)
  assert metrics.binary_auc([0.2, 0.7], [True, True]) is None  # no negatives: undefined
  with pytest.raises(ValueError):
    metrics.binary_auc([0.2, 0.7], [0, 2])
