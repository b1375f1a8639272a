"""Cross-validation (issue #18 item 1): fold assignment disjoint, stratified and group-respecting
(checked by hand counts), out-of-fold predictions covering every pooled image once, the fold
ensemble equal to the mean of the folds' test probabilities, and a SIGKILL mid-fold resumed to the
same summary."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import signal_after_first_checkpoint, write_label_tree
from jaxmed.training import crossval

REPO = Path(__file__).resolve().parents[2]


def test_folds_are_disjoint_complete_stratified_and_keep_groups_whole():
  labels = np.repeat([0, 1, 2], [60, 30, 12])
  groups = np.array([f"p{i // 3}" for i in range(len(labels))])  # 3 images per patient
  folds = crossval.assign_folds(labels, groups, 4, seed=1)
  assert folds.min() == 0 and folds.max() == 3 and len(folds) == len(labels)  # each image once
  for g in np.unique(groups):
    assert len(set(folds[groups == g])) == 1  # a patient in one fold
  for c in range(3):  # per class, fold sizes differ by at most one group (3 images)
    counts = np.bincount(folds[labels == c], minlength=4)
    assert counts.max() - counts.min() <= 3, (c, counts)
  np.testing.assert_array_equal(folds, crossval.assign_folds(labels, groups, 4, seed=1))
  assert not np.array_equal(folds, crossval.assign_folds(labels, groups, 4, seed=2))
  with pytest.raises(ValueError, match="cannot fill"):
    crossval.assign_folds([0, 1], ["a", "a"], 2, 0)


def test_regex_groups_and_identical_files_share_a_group():
  paths = ["/d/train/a/p1_x.png", "/d/train/a/p1_y.png", "/d/train/b/p2_x.png", "/d/train/b/q.png"]
  digests = ["s1", "s2", "s3", "s1"]  # q.png is a copy of p1_x.png
  ids = crossval._group_ids(paths, digests, r"(p\d+)_", "/d")
  assert ids[0] == ids[1] == ids[3] and ids[2] != ids[0]


def test_copy_clusters_share_a_group_with_group_by_copies(tmp_path):
  """Rotated and flipped copies of a picture join its group only with group_by='copies'."""
  from PIL import Image
  rng = np.random.default_rng(0)
  paths = []
  for i in range(6):
    small = Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L")
    picture = small.resize((96, 96), Image.Resampling.BICUBIC)
    for k, copy in enumerate([picture, picture.rotate(90), picture.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
                             if i < 2 else [picture]):
      paths.append(tmp_path / f"img{i}_{k}.png")
      copy.save(paths[-1])
  digests = [f"d{i}" for i in range(len(paths))]
  plain = crossval._group_ids(paths, digests, None, str(tmp_path))
  grouped = crossval._group_ids(paths, digests, None, str(tmp_path), "copies")
  assert len(set(plain)) == len(paths)
  assert grouped[0] == grouped[1] == grouped[2] and grouped[3] == grouped[4] == grouped[5]
  assert len(set(grouped)) == 2 + 4


def _command(root, workdir, *extra):
  return [sys.executable, "-m", "jaxmed.crossval", "--config", "tests/tiny_config.py",
          f"--config.data.root={root}", "--config.model.arch=lenet", "--config.frozen.epochs=1",
          "--config.finetune.epochs=1", "--config.train.checkpoint_every_steps=2", "--folds=3",
          r"--group-regex=(\w_\d\d)\d\.png", f"--workdir={workdir}", *extra]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return write_label_tree(tmp_path_factory.mktemp("cv_data"),
                          {"train": {"a": 30, "b": 24}, "test": {"a": 5, "b": 5}})


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cv") / "w"
  done = subprocess.run(_command(data_root, workdir), cwd=REPO, capture_output=True, text=True,
                        timeout=900)
  assert done.returncode == 0, done.stdout + done.stderr
  assert "oof: accuracy" in done.stdout and "ensemble_test: accuracy" in done.stdout
  assert "out-of-fold temperature" in done.stdout
  return workdir


def test_summary_holds_folds_oof_and_the_fold_ensemble(finished, data_root):
  summary = json.loads((finished / "cv_summary.json").read_text())
  assert [f["fold"] for f in summary["folds"]] == [0, 1, 2]
  assert {"accuracy", "macro_f1", "ci95"} <= set(summary["oof"])
  lo, hi = summary["oof"]["ci95"]["accuracy"]
  assert lo <= summary["oof"]["accuracy"] <= hi
  pooled = sorted(str(p) for p in (data_root / "train").rglob("*.png"))
  oof_paths = sorted(p["path"] for p in summary["oof_predictions"])
  assert oof_paths == pooled  # every train image validated exactly once
  vals = []
  for f in range(3):
    rows = [json.loads(l) for l in (finished / "manifests" / f"fold-{f}.jsonl").read_text().splitlines()[1:]]
    val = {r["file"] for r in rows if r["split"] == "val"}
    train = {r["file"] for r in rows if r["split"] == "train"}
    assert not val & train
    groups = lambda names: {Path(n).name.split("_")[1][:2] + Path(n).parent.name for n in names}
    assert not groups(val) & groups(train)  # no group on both sides
    vals.append(val)
  assert not (vals[0] & vals[1]) and not (vals[1] & vals[2]) and not (vals[0] & vals[2])
  # the ensemble is the mean of the folds' test probabilities
  from jaxmed.evaluation.evaluator import compute_metrics
  tests = [json.loads((finished / f"fold-{f}" / "eval" / "test.json").read_text()) for f in range(3)]
  mean = np.mean([[p["probs"] for p in t["predictions"]] for t in tests], axis=0)
  labels = [p["label"] for p in tests[0]["predictions"]]
  expected = compute_metrics(mean, np.array(labels), summary["classes"])
  assert summary["ensemble_test"]["accuracy"] == pytest.approx(expected["accuracy"])
  assert summary["ensemble_test"]["confusion_matrix"] == expected["confusion_matrix"]
  # the out-of-fold temperature: refitted here from the stored predictions, and it helps NLL
  from jaxmed.evaluation import calibration
  oof_probs = np.array([p["probs"] for p in summary["oof_predictions"]])
  oof_labels = np.array([p["label"] for p in summary["oof_predictions"]])
  fitted = summary["oof_calibration"]
  assert fitted["temperature"] == pytest.approx(calibration.fit_temperature(oof_probs, oof_labels))
  assert fitted["after"]["nll"] <= fitted["before"]["nll"] + 1e-12
  assert fitted["before"]["nll"] == pytest.approx(calibration.negative_log_likelihood(oof_probs, oof_labels))


def test_sigkill_mid_fold_then_resume_gives_the_same_summary(finished, data_root, tmp_path):
  workdir = tmp_path / "killed"
  signal_after_first_checkpoint(_command(data_root, workdir),
                                workdir / "fold-1" / "checkpoints" / "latest", signal.SIGKILL, REPO)
  assert not (workdir / "cv_summary.json").exists()
  done = subprocess.run(_command(data_root, workdir), cwd=REPO, capture_output=True, text=True,
                        timeout=900)
  assert done.returncode == 0, done.stdout + done.stderr
  assert "resuming from" in done.stdout
  one = json.loads((finished / "cv_summary.json").read_text())
  two = json.loads((workdir / "cv_summary.json").read_text())
  for key in ("folds", "oof", "ensemble_test"):
    a, b = json.dumps(one[key], sort_keys=True), json.dumps(two[key], sort_keys=True)
    assert a.replace(str(finished), "W") == b.replace(str(workdir), "W")


def test_a_changed_plan_is_refused(finished, data_root):
  done = subprocess.run([*_command(data_root, finished)[:-1], "--folds=4", f"--workdir={finished}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and "another plan" in done.stderr


def test_the_fold_ensemble_exports_and_predicts_the_mean_of_the_folds(finished, tmp_path):
  from jaxmed import export
  from jaxmed.evaluation.inference import load_predictor, predict_files
  out = tmp_path / "folds.jaxmed"
  assert export.main(["--workdir", str(finished), "--out", str(out)]) == 0
  predictor = load_predictor(bundle=out)
  assert predictor.header["ensemble"] == 3 and len(predictor.members) == 3
  tests = [json.loads((finished / f"fold-{f}" / "eval" / "test.json").read_text()) for f in range(3)]
  paths = [p["path"] for p in tests[0]["predictions"]]
  mean = np.mean([[p["probs"] for p in t["predictions"]] for t in tests], axis=0)
  records = predict_files(predictor, paths)
  got = np.array([[r["probs"][c] for c in predictor.classes] for r in records])
  np.testing.assert_allclose(got, mean, atol=2e-5)
