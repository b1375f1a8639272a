"""jaxmed.evaluation.metrics against hand arithmetic and against scikit-learn."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxmed.evaluation import metrics as M

# rows = true class, columns = predicted class
HAND_CM = np.array([[5, 1, 0],
                    [2, 3, 1],
                    [0, 1, 7]])
NAMES = ["normal", "benign", "malignant"]


def test_hand_computed_3x3():
  m = M.classification_metrics(HAND_CM, NAMES)
  # total = 6 + 6 + 8 = 20, diagonal = 5 + 3 + 7 = 15 -> accuracy 15/20
  assert m["accuracy"] == pytest.approx(0.75)
  # column sums (predicted) = 7, 5, 8 -> precision 5/7, 3/5, 7/8
  prec = [5 / 7, 3 / 5, 7 / 8]
  # row sums (support) = 6, 6, 8 -> recall 5/6, 3/6, 7/8
  rec = [5 / 6, 3 / 6, 7 / 8]
  # f1 = 2tp / (2tp + fp + fn) = 2tp / (support + predicted): 10/13, 6/11, 14/16
  f1 = [10 / 13, 6 / 11, 14 / 16]
  # tn = total - support - predicted + tp: 20-6-7+5=12, 20-6-5+3=12, 20-8-8+7=11
  # fp = predicted - tp: 2, 2, 1 -> specificity 12/14, 12/14, 11/12
  spec = [12 / 14, 12 / 14, 11 / 12]
  for i, name in enumerate(NAMES):
    pc = m["per_class"][name]
    assert pc["precision"] == pytest.approx(prec[i])
    assert pc["recall"] == pytest.approx(rec[i])
    assert pc["f1"] == pytest.approx(f1[i])
    assert pc["specificity"] == pytest.approx(spec[i])
  assert [m["per_class"][n]["support"] for n in NAMES] == [6, 6, 8]
  # balanced accuracy = mean recall = (5/6 + 1/2 + 7/8) / 3 = 0.7361...
  assert m["balanced_accuracy"] == pytest.approx((5 / 6 + 1 / 2 + 7 / 8) / 3)
  assert m["macro_precision"] == pytest.approx((5 / 7 + 3 / 5 + 7 / 8) / 3)
  assert m["macro_recall"] == pytest.approx((5 / 6 + 1 / 2 + 7 / 8) / 3)
  assert m["macro_f1"] == pytest.approx((10 / 13 + 6 / 11 + 7 / 8) / 3)
  # weighted by support 6, 6, 8 over 20
  assert m["weighted_f1"] == pytest.approx((6 * 10 / 13 + 6 * 6 / 11 + 8 * 7 / 8) / 20)
  assert m["confusion_matrix"] == HAND_CM.tolist()
  json.dumps(m)  # plain python types only


def test_hand_zero_division():
  # class 1 is never predicted; class 2 has no examples and is never predicted.
  cm = np.array([[2, 0, 0],
                 [1, 0, 0],
                 [0, 0, 0]])
  m = M.classification_metrics(cm, ["a", "b", "c"])
  assert m["accuracy"] == pytest.approx(2 / 3)
  assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "specificity": 1.0,
                                 "f1": 0.0, "support": 1}
  # c: tp=fp=fn=0, tn=3 -> precision/recall/f1 0 by zero_division, specificity 3/3
  assert m["per_class"]["c"]["f1"] == 0.0 and m["per_class"]["c"]["support"] == 0
  # balanced accuracy averages recall over classes present in y_true only: (1 + 0) / 2
  assert m["balanced_accuracy"] == pytest.approx(0.5)
  # macro averages run over all 3 labels: precision a = 2/3, f1 a = 4/5
  assert m["macro_precision"] == pytest.approx((2 / 3) / 3)
  assert m["macro_f1"] == pytest.approx((4 / 5) / 3)


def test_confusion_matrix_layout_and_validation():
  cm = M.confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3)
  assert cm.dtype == np.int64
  assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]  # cm[true, pred]
  with pytest.raises(ValueError):
    M.confusion_matrix([0, 3], [0, 0], 3)
  with pytest.raises(ValueError):
    M.confusion_matrix([0, 1], [0], 3)
  with pytest.raises(ValueError):
    M.classification_metrics(np.eye(2), ["a", "a"])


def _random_case(seed, n=300, k=5):
  """Class 3 is never predicted, class 4 never occurs in y_true."""
  rng = np.random.default_rng(seed)
  y_true = rng.choice([0, 1, 2, 3], size=n, p=[0.4, 0.3, 0.2, 0.1])
  noisy = rng.choice([0, 1, 2, 4], size=n)
  y_pred = np.where(rng.random(n) < 0.5, y_true, noisy)
  y_pred = np.where(y_pred == 3, 4, y_pred)
  logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y_true]
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  probs = np.round(probs, 1)  # coarse scores force many ties
  return y_true, y_pred, probs, k


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_sklearn(seed):
  y_true, y_pred, probs, k = _random_case(seed)
  labels = list(range(k))
  assert 3 not in y_pred and 4 not in y_true
  cm = M.confusion_matrix(y_true, y_pred, k)
  np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=labels))

  m = M.classification_metrics(cm, [f"c{i}" for i in labels])
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
  with pytest.warns(UserWarning):  # sklearn warns that y_pred has a class absent from y_true
    expected_bacc = skm.balanced_accuracy_score(y_true, y_pred)
  assert m["balanced_accuracy"] == pytest.approx(expected_bacc)

  p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                   zero_division=0)
  for i in labels:
    pc = m["per_class"][f"c{i}"]
    assert pc["precision"] == pytest.approx(p[i])
    assert pc["recall"] == pytest.approx(r[i])
    assert pc["f1"] == pytest.approx(f[i])
    assert pc["support"] == s[i]
    neg = y_true != i
    assert pc["specificity"] == pytest.approx(np.mean(y_pred[neg] != i))
  for avg in ("macro", "weighted"):
    assert m[f"{avg}_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=labels, average=avg, zero_division=0))
  assert m["macro_precision"] == pytest.approx(
      skm.precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
  assert m["macro_recall"] == pytest.approx(
      skm.recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))

  auc = M.one_vs_rest_auc(y_true, probs)
  expected = [skm.roc_auc_score(y_true == c, probs[:, c]) for c in range(4)]
  assert auc["per_class"][:4] == pytest.approx(expected)
  assert auc["per_class"][4] is None  # no positives for class 4
  assert auc["macro"] == pytest.approx(np.mean(expected))
  json.dumps(auc)


def test_auc_hand_and_ties():
  # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered correctly -> 0.75
  auc = M.one_vs_rest_auc([0, 0, 1, 1], np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35],
                                                  [0.2, 0.8]]))
  assert auc["per_class"][1] == pytest.approx(0.75)
  assert auc["per_class"][0] == pytest.approx(0.75)
  # one tied pair counts a half: pos {0.5, 0.9} vs neg {0.5, 0.1} -> (1 + 1 + 0.5 + 1)/4
  tied = M.one_vs_rest_auc([1, 0, 1, 0], np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.9],
                                                   [0.9, 0.1]]))
  assert tied["per_class"][1] == pytest.approx(0.875)
  assert M.one_vs_rest_auc([0, 0], np.ones((2, 2)) / 2) == {"per_class": [None, None],
                                                            "macro": None}


def _noisy_predictions(n, k=3, acc=0.8, seed=0):
  rng = np.random.default_rng(seed)
  y_true = rng.integers(0, k, size=n)
  y_pred = np.where(rng.random(n) < acc, y_true, rng.integers(0, k, size=n))
  return y_true, y_pred


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_contains_estimate_and_narrows(metric):
  widths = []
  for n in (80, 2000):
    y_true, y_pred = _noisy_predictions(n)
    m = M.classification_metrics(M.confusion_matrix(y_true, y_pred, 3), ["a", "b", "c"])
    lo, hi = M.bootstrap_ci(y_true, y_pred, 3, metric=metric, n=500, seed=1)
    assert isinstance(lo, float) and isinstance(hi, float)
    assert lo <= m[metric] <= hi
    widths.append(hi - lo)
  assert widths[1] < widths[0] / 2  # ~sqrt(25) = 5x narrower in theory
  # deterministic for a fixed seed; a different alpha gives a nested interval
  y_true, y_pred = _noisy_predictions(200)
  a = M.bootstrap_ci(y_true, y_pred, 3, metric=metric, seed=3)
  assert a == M.bootstrap_ci(y_true, y_pred, 3, metric=metric, seed=3)
  lo90, hi90 = M.bootstrap_ci(y_true, y_pred, 3, metric=metric, seed=3, alpha=0.1)
  assert a[0] <= lo90 <= hi90 <= a[1]


def test_bootstrap_macro_f1_matches_loop():
  # The vectorised per-resample macro F1 must equal the straightforward per-resample computation.
  y_true, y_pred = _noisy_predictions(50, k=4, acc=0.6)
  rng = np.random.default_rng(0)
  idx = rng.integers(0, 50, size=(20, 50))
  fast = M._batched_stat(y_true, y_pred, idx, 4, "macro_f1")
  slow = [M.classification_metrics(M.confusion_matrix(y_true[i], y_pred[i], 4),
                                   list("abcd"))["macro_f1"] for i in idx]
  np.testing.assert_allclose(fast, slow)
  with pytest.raises(ValueError):
    M.bootstrap_ci(y_true, y_pred, 4, metric="auc")


def test_format_table():
  m = M.classification_metrics(HAND_CM, NAMES)
  table = M.format_table(m, NAMES)
  lines = table.splitlines()
  assert all(h in lines[0] for h in ("precision", "recall", "f1-score", "specificity", "support"))
  for name in NAMES:
    assert any(line.strip().startswith(name) for line in lines)
  acc_line = next(line for line in lines if line.strip().startswith("accuracy"))
  assert "0.75" in acc_line and acc_line.rstrip().endswith("20")
  macro_line = next(line for line in lines if line.strip().startswith("macro avg"))
  assert f"{m['macro_f1']:.2f}" in macro_line
  assert any(line.strip().startswith("weighted avg") for line in lines)
  # malignant row: precision 0.88, recall 0.88, f1 0.88, specificity 11/12 = 0.92, support 8
  row = next(line for line in lines if line.strip().startswith("malignant")).split()
  assert row[1:] == ["0.88", "0.88", "0.88", "0.92", "8"]


def test_paired_bootstrap_difference_by_hand_and_sklearn():
  """b minus a on the same examples: the point difference by hand and from sklearn, an interval
  clear of 0 where b fixes 40 of a's errors and makes 10 new ones, and exactly 0 for a vs a."""
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 400)
  a, b = labels.copy(), labels.copy()
  a[:60] = 1 - a[:60]
  b[40:70] = 1 - b[40:70]
  acc = M.paired_bootstrap_ci(labels, a, b, 2, "accuracy", n=500)
  assert np.isclose(acc["diff"], (40 - 10) / 400)
  assert np.isclose(acc["diff"], skm.accuracy_score(labels, b) - skm.accuracy_score(labels, a))
  assert 0 < acc["ci95"][0] < acc["diff"] < acc["ci95"][1] < 0.15
  f1 = M.paired_bootstrap_ci(labels, a, b, 2, "macro_f1", n=500)
  assert np.isclose(f1["diff"], skm.f1_score(labels, b, average="macro")
                    - skm.f1_score(labels, a, average="macro"))
  three = rng.integers(0, 3, 300)
  noisy = np.where(rng.random(300) < 0.3, rng.integers(0, 3, 300), three)
  assert np.isclose(M.paired_bootstrap_ci(three, three, noisy, 3, "macro_f1", n=10)["diff"],
                    skm.f1_score(three, noisy, average="macro") - 1.0)
  assert M.paired_bootstrap_ci(labels, a, a, 2, n=50) == {"diff": 0.0, "ci95": [0.0, 0.0]}
