"""Calibration and operating points against sklearn and hand computations (issue #18 item 5)."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_curve

from jaxmed.evaluation import calibration as cal


def _toy(n=400, k=3, seed=0, sharpness=3.0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  logits = rng.normal(size=(n, k)) + sharpness * np.eye(k)[labels] * rng.uniform(0, 1, (n, 1))
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  return probs, labels


def test_ece_equals_a_hand_computation():
  probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
  labels = np.array([0, 1, 1, 0])
  # confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.55 (wrong); 15 bins of width 1/15:
  # each lands in its own bin, so ECE = mean |correct - confidence|
  expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(0 - 0.55)) / 4
  assert cal.expected_calibration_error(probs, labels) == pytest.approx(expected)
  # two confidences sharing a bin are averaged first: 0.61 and 0.62 both in [0.6, 0.667)
  shared = np.array([[0.61, 0.39], [0.38, 0.62]])
  assert cal.expected_calibration_error(shared, np.array([0, 0])) == pytest.approx(
      abs(0.5 - (0.61 + 0.62) / 2))


def test_binned_matches_sklearn_calibration_curve():
  probs, labels = _toy(k=2)
  positive = labels == 1
  true, predicted = calibration_curve(positive, probs[:, 1], n_bins=15, strategy="uniform")
  b = cal.binned(probs[:, 1], positive, 15)
  np.testing.assert_allclose(b["outcome"], true, rtol=1e-12)
  np.testing.assert_allclose(b["confidence"], predicted, rtol=1e-12)


def test_brier_and_nll_match_sklearn():
  probs, labels = _toy(k=2)
  assert cal.brier_score(probs, labels) == pytest.approx(2 * brier_score_loss(labels, probs[:, 1]))
  probs3, labels3 = _toy(k=3)
  onehot = np.eye(3)[labels3]
  assert cal.brier_score(probs3, labels3) == pytest.approx(np.mean(((probs3 - onehot) ** 2).sum(1)))
  assert cal.negative_log_likelihood(probs3, labels3) == pytest.approx(log_loss(labels3, probs3))


def test_temperature_recovers_a_known_overconfidence_and_keeps_the_argmax():
  probs, labels = _toy(n=3000, k=3, seed=1)
  honest_t = cal.fit_temperature(probs, labels)
  overconfident = cal.apply_temperature(probs, 1 / 2.5)  # logits x 2.5
  fitted = cal.fit_temperature(overconfident, labels)
  assert fitted == pytest.approx(2.5 * honest_t, rel=1e-3)
  rescaled = cal.apply_temperature(overconfident, fitted)
  np.testing.assert_array_equal(rescaled.argmax(1), overconfident.argmax(1))
  assert cal.negative_log_likelihood(rescaled, labels) < cal.negative_log_likelihood(overconfident, labels)
  assert cal.expected_calibration_error(rescaled, labels) < cal.expected_calibration_error(overconfident, labels)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_threshold_for_sensitivity_matches_the_roc_curve(target):
  probs, labels = _toy(k=2, seed=3, sharpness=2.0)
  scores, positive = probs[:, 1], labels == 1
  t = cal.threshold_for(scores, positive, target, "sensitivity")
  fpr, tpr, thresholds = roc_curve(positive, scores, drop_intermediate=False)
  assert t == pytest.approx(thresholds[np.flatnonzero(tpr >= target)[0]])
  rates = cal.rates_at(scores, positive, t)
  assert rates["sensitivity"] >= target
  # the next higher candidate would miss the target
  higher = np.unique(scores)[np.unique(scores) > t]
  if len(higher):
    assert cal.rates_at(scores, positive, higher[0])["sensitivity"] < target


def test_threshold_for_specificity_is_the_lowest_that_keeps_it():
  probs, labels = _toy(k=2, seed=4, sharpness=2.0)
  scores, positive = probs[:, 1], labels == 1
  t = cal.threshold_for(scores, positive, 0.9, "specificity")
  assert cal.rates_at(scores, positive, t)["specificity"] >= 0.9
  lower = np.unique(scores)[np.unique(scores) < t]
  assert cal.rates_at(scores, positive, lower[-1])["specificity"] < 0.9


def test_rates_and_wilson_intervals_by_hand():
  scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
  positive = np.array([True, True, False, True, False, False])
  r = cal.rates_at(scores, positive, 0.5)
  assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (2, 1, 2, 1)
  assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == pytest.approx(2 / 3)
  assert r["ppv"] == pytest.approx(2 / 3) and r["npv"] == pytest.approx(2 / 3)
  # Wilson 95 % for 2/3, by the formula: centre (p + z^2/2n)/(1 + z^2/n), half-width ...
  z, n, p = 1.959964, 3, 2 / 3
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  np.testing.assert_allclose(r["sensitivity_ci95"], [centre - half, centre + half])
  assert cal.wilson_interval(0, 0) is None


def test_a_threshold_needs_both_kinds_of_example():
  with pytest.raises(ValueError, match="both"):
    cal.threshold_for([0.1, 0.2], [True, True], 0.9)
