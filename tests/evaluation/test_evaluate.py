"""jaxmed.evaluate and jaxmed.compare on one tiny trained run (shared with the other tests of
evaluate/predict/export/html_report through conftest's `trained_workdir`)."""

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import small_config, trained_workdir, write_label_tree
from jaxmed.data.load import load_split
from jaxmed.evaluation import predictions

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return trained_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def evaluated(workdir):
  import jaxmed.evaluate as evaluate
  assert evaluate.main(["--workdir", str(workdir)]) == 0
  return json.loads((workdir / "eval" / "test.json").read_text())


def test_metrics_equal_sklearn_on_the_same_predictions(evaluated):
  classes = evaluated["classes"]
  preds = evaluated["predictions"]
  y = np.array([p["label"] for p in preds])
  probs = np.array([p["probs"] for p in preds])
  yhat = np.array([p["predicted"] for p in preds])
  assert evaluated["num_examples"] == len(preds) == 12
  assert np.array_equal(yhat, probs.argmax(1))
  labels = list(range(len(classes)))
  assert evaluated["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat))
  assert evaluated["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, yhat))
  assert evaluated["confusion_matrix"] == skm.confusion_matrix(y, yhat, labels=labels).tolist()
  p, r, f, s = skm.precision_recall_fscore_support(y, yhat, labels=labels, zero_division=0)
  for k, c in enumerate(classes):
    row = evaluated["per_class"][c]
    assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[k], r[k], f[k], s[k]))
    tn = np.sum((y != k) & (yhat != k))
    assert row["specificity"] == pytest.approx(tn / np.sum(y != k))
    assert evaluated["auc"]["per_class"][k] == pytest.approx(skm.roc_auc_score(y == k, probs[:, k]))
  for avg in ("macro", "weighted"):
    p, r, f, _ = skm.precision_recall_fscore_support(y, yhat, labels=labels, average=avg, zero_division=0)
    got = evaluated["averages"][avg]
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))
  assert evaluated["auc"]["macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-6)


def test_predictions_are_the_models_and_match_training_summary(workdir, evaluated):
  import jaxmed.evaluate as evaluate
  from jaxmed.evaluation.trained_run import load_run
  run = load_run(workdir)
  split = load_split(run)
  direct = np.asarray(run.predict_fn()(run.variables, split.images))
  assert np.allclose([p["probs"] for p in evaluated["predictions"]], direct, atol=1e-5)
  summary = json.loads((workdir / "summary.json").read_text())
  assert evaluated["confusion_matrix"] == summary["test"]["confusion_matrix"]


def test_bootstrap_ci_covers_the_point_estimate(evaluated):
  for metric in ("accuracy", "macro_f1"):
    lo, hi = evaluated["ci95"][metric]
    assert 0.0 <= lo <= evaluated[metric] <= hi <= 1.0
  from jaxmed.evaluation.evaluator import compute_metrics
  rng = np.random.default_rng(1)
  y = rng.integers(0, 3, 300)
  probs = rng.dirichlet([1, 1, 1], 300)
  probs[np.arange(300), y] += 0.6 * rng.random(300)  # better than chance, not perfect
  result = compute_metrics(probs / probs.sum(1, keepdims=True), y, ["x", "y", "z"])
  for metric in ("accuracy", "macro_f1"):
    lo, hi = result["ci95"][metric]
    assert lo < result[metric] < hi and hi - lo < 0.2


def test_tta_views_are_deterministic_flips_and_shifts(workdir):
  import jaxmed.evaluate as evaluate
  from jaxmed.evaluation.trained_run import load_run
  images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
  views = predictions.tta_views(images, 8)
  assert len(views) == 8 and np.array_equal(views[0], images)
  assert np.array_equal(views[1], images[:, :, ::-1])
  assert np.array_equal(views[2][:, :, 2:], images[:, :, :-2])  # shifted right by 2 pixels
  assert all(not np.array_equal(a, b) for i, a in enumerate(views) for b in views[:i])
  assert all(np.array_equal(a, b) for a, b in zip(views, predictions.tta_views(images, 8)))
  with pytest.raises(ValueError):
    predictions.tta_views(images, 9)
  run = load_run(workdir)
  probs = predictions.predict_probs(run.model, run.variables, images, batch_size=2, tta=4)
  assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1.0)


def test_other_dataset_is_mapped_by_class_name(workdir, tmp_path, capsys):
  import jaxmed.evaluate as evaluate
  other = write_label_tree(tmp_path / "other", {"x": {"c": 3, "a": 2}}, size=20)  # class folders only
  assert evaluate.main(["--workdir", str(workdir), "--data", str(other / "x"), "--name", "ext"]) == 0
  result = json.loads((workdir / "eval" / "ext.json").read_text())
  assert [result["per_class"][c]["support"] for c in "abc"] == [2, 0, 3]
  assert sorted(p["label"] for p in result["predictions"]) == [0, 0, 2, 2, 2]
  bad = write_label_tree(tmp_path / "bad", {"test": {"a": 2, "tumour": 2}}, size=20)
  assert evaluate.main(["--workdir", str(workdir), "--data", str(bad)]) == 2
  assert "tumour" in capsys.readouterr().err


def test_compare_table(workdir, tmp_path, capsys):
  from jaxmed import compare
  out = tmp_path / "cmp" / "runs.md"
  assert compare.main([str(workdir), str(workdir), "--out", str(out)]) == 0
  rows = json.loads(out.with_suffix(".json").read_text())
  summary = json.loads((workdir / "summary.json").read_text())
  assert len(rows) == 2 and rows[0]["backbone"] == "lenet" and rows[0]["input"] == 32
  assert rows[0]["accuracy"] == summary["test"]["accuracy"]
  assert rows[0]["auc"] == summary["test"]["auc"]["macro"]
  assert rows[0]["parameters"] > 1000 and rows[0]["images_per_s"] > 0 and rows[0]["train_s"] > 0
  text = out.read_text()
  assert text.startswith("| run | backbone | input size | parameters | evaluated on | accuracy")
  assert text.splitlines()[2].startswith(f"| {workdir.name} | lenet | 32x32 | ") and "| test |" in text
  assert compare.main([str(tmp_path), "--out", str(out)]) == 2


def test_calibration_and_operating_points_are_chosen_on_validation(workdir, evaluated, capsys,
                                                                     tmp_path):
  import shutil
  from jaxmed.evaluation import calibration as cal
  import jaxmed.evaluate as evaluate
  workdir = Path(shutil.copytree(workdir, tmp_path / "run"))  # the shared run stays uncalibrated
  assert evaluate.main(["--workdir", str(workdir), "--calibrate", "--target-sensitivity", "0.9",
                        "--name", "calibrated"]) == 0
  out = capsys.readouterr().out
  assert "calibration (temperature" in out and "vs rest at threshold" in out
  result = json.loads((workdir / "eval" / "calibrated.json").read_text())
  c = result["calibration"]
  for when in ("before", "after"):
    assert set(c[when]) == {"ece", "brier", "nll"}
  assert c["before"] == pytest.approx(evaluated["calibration"])  # uncalibrated = plain evaluate
  assert c["fitted_on_after"]["nll"] <= c["fitted_on_before"]["nll"] + 1e-9  # T minimises it
  stored = json.loads((workdir / "calibration.json").read_text())
  assert stored["temperature"] == pytest.approx(c["temperature"]) and stored["fitted_on"] == "val"
  # recomputed from the written test predictions: the temperature applies as documented
  probs = np.array([p["probs"] for p in result["predictions"]])
  labels = np.array([p["label"] for p in result["predictions"]])
  calibrated = cal.apply_temperature(probs, c["temperature"])
  assert cal.expected_calibration_error(calibrated, labels) == pytest.approx(c["after"]["ece"], abs=1e-4)
  points = result["operating_points"]
  assert set(points) == set(result["classes"])
  for name, point in points.items():
    assert point["val"]["sensitivity"] >= 0.9  # the target holds where it was chosen
    k = result["classes"].index(name)
    called = calibrated[:, k] >= point["threshold"]
    positive = labels == k
    assert point["evaluated"]["tp"] == int(np.sum(called & positive))
    assert point["evaluated"]["fp"] == int(np.sum(called & ~positive))
  assert json.loads((workdir / "operating_points.json").read_text())["by"] == "sensitivity"
  from jaxmed import html_report  # the report draws both: reliability diagram, chosen points
  assert html_report.main(["--workdir", str(workdir), "--gradcam-per-class", "0"]) == 0
  page = (workdir / "report" / "index.html").read_text(encoding="utf-8")
  section = page.split('<section id="calibration">')[1].split("</section>")[0]
  assert "A temperature of" in section and section.count("<img") == 1
  # predict applies both, from the workdir and from an export bundle
  from jaxmed.evaluation import bundle as bundle_lib
  from jaxmed.evaluation.inference import load_predictor, predict_files
  from jaxmed.evaluation.trained_run import load_run
  paths = [p["path"] for p in result["predictions"][:5]]
  exported = bundle_lib.write_bundle(load_run(workdir, "best"), tmp_path / "m.jaxmed")
  for predictor in (load_predictor(workdir=workdir), load_predictor(bundle=exported)):
    records = predict_files(predictor, paths)
    for record, row in zip(records, calibrated[:5]):
      assert record["temperature"] == pytest.approx(c["temperature"])
      np.testing.assert_allclose([record["probs"][k] for k in result["classes"]], row, atol=2e-5)
      assert record["at_operating_point"] == {
          k: bool(row[i] >= points[k]["threshold"]) for i, k in enumerate(result["classes"])}


def test_a_target_outside_zero_one_is_a_one_line_error(workdir, capsys):
  import jaxmed.evaluate as evaluate
  assert evaluate.main(["--workdir", str(workdir), "--target-specificity", "95"]) == 2
  assert capsys.readouterr().err.startswith("error: --target-specificity 95.0")
