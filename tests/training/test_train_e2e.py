"""The whole job on a tiny label-directory dataset: outputs, summary contents, reproducibility."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxmed.training import loop as train
from conftest import small_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  from conftest import write_label_tree
  root = write_label_tree(tmp_path_factory.mktemp("data"),
                          {"train": {"a": 12, "b": 12, "c": 8}, "test": {"a": 4, "b": 4, "c": 4}})
  (root / "train" / "a" / "broken.jpg").write_text("not a jpeg")
  config = small_config(root)
  config.augment = {"preset": "mri"}  # the on-device augmentation path, inside the step
  results = []
  for name in ("first", "second"):
    workdir = tmp_path_factory.mktemp(name)
    results.append((workdir, train.train_and_evaluate(config, workdir)))
  return results


def test_outputs_and_summary_fields(two_runs):
  workdir, summary = two_runs[0]
  assert summary["classes"] == ["a", "b", "c"]
  test = summary["test"]
  cm = np.asarray(test["confusion_matrix"])
  assert cm.shape == (3, 3) and cm.sum(axis=1).tolist() == [4, 4, 4]  # rows = true class
  assert test["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
  assert 0.0 <= test["macro_f1"] <= 1.0
  assert len(summary["final_params_sha256"]) == 64
  for key in ("data_s", "compile_s", "train_s", "evaluate_s"):
    assert summary["timings"][key] >= 0.0
  for key in ("python", "jax", "flax", "optax", "numpy"):
    assert summary["versions"][key]
  # model.dtype='auto' resolved, with the reason (the suite runs JAXMED_BFLOAT16=off: conftest)
  precision = summary["precision"]
  assert {k: precision[k] for k in ("setting", "dtype", "reason")} == {
      "setting": "auto", "dtype": "float32", "reason": "JAXMED_BFLOAT16=off"}
  assert set(precision["probe"]) == {"model", "matrix_flags"}
  assert len(summary["data"]["skipped_files"]) == 1 and "broken.jpg" in summary["data"]["skipped_files"][0]
  # validation carved from train, stratified: 15 % of 12/12/8 -> 2/2/1
  assert summary["data"]["counts"]["val"] == [2, 2, 1]
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["final_params_sha256"] == summary["final_params_sha256"]
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert {(l["epoch"], l["phase"], l["split"]) for l in lines} == {
      (1, "frozen", "train"), (1, "frozen", "val"), (2, "finetune", "train"), (2, "finetune", "val"),
      (3, "finetune", "train"), (3, "finetune", "val")}
  for png in ("curves.png", "confusion_matrix.png"):
    with Image.open(workdir / "report" / png) as im:
      assert im.size[0] > 100
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert (workdir / "checkpoints" / "latest").is_dir() and (workdir / "checkpoints" / "best").is_dir()


def test_same_seed_gives_the_same_final_parameters(two_runs):
  (_, first), (_, second) = two_runs
  assert first["final_params_sha256"] == second["final_params_sha256"]
  assert first["test"]["confusion_matrix"] == second["test"]["confusion_matrix"]
