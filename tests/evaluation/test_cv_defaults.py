"""benchmarks/cv_defaults.py's comparison of two settings on the same out-of-fold images: its
macro-F1 against sklearn, its paired difference against a hand count, and its interval."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # cv_defaults imports its sibling fixed_costs
_spec = importlib.util.spec_from_file_location("cv_defaults", BENCHMARKS / "cv_defaults.py")
cv_defaults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cv_defaults)


def _one_hot_probs(pred, k):
  return np.eye(k)[pred] * 0.8 + 0.2 / k


def test_macro_f1_equals_sklearn():
  rng = np.random.default_rng(0)
  labels, pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
  pred[:5] = 0  # every class predicted and present
  assert np.isclose(cv_defaults.macro_f1(pred, labels, 3),
                    f1_score(labels, pred, average="macro"))


def test_paired_difference_by_hand():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 400)
  a = labels.copy()
  a[:60] = 1 - a[:60]  # a wrong on 60 images
  b = labels.copy()
  b[40:70] = 1 - b[40:70]  # b wrong on 30, 20 of them where a was wrong too
  diff = cv_defaults.paired_difference(labels, _one_hot_probs(a, 2), _one_hot_probs(b, 2),
                                       rounds=500)
  assert np.isclose(diff["accuracy"]["diff"], (60 - 30) / 400)
  assert np.isclose(diff["accuracy"]["diff"],
                    accuracy_score(labels, b) - accuracy_score(labels, a))
  assert np.isclose(diff["macro_f1"]["diff"], f1_score(labels, b, average="macro")
                    - f1_score(labels, a, average="macro"))
  low, high = diff["accuracy"]["ci95"]
  assert 0 < low < 30 / 400 < high < 0.15  # b right on 40 of a's errors, wrong on 10 new: > 0
  same = cv_defaults.paired_difference(labels, _one_hot_probs(a, 2), _one_hot_probs(a, 2),
                                       rounds=100)
  assert same["accuracy"] == {"diff": 0.0, "ci95": [0.0, 0.0]}
