"""Are the probabilities honest, and where should the decision threshold be?

Calibration (Guo et al. 2017): expected calibration error over 15 equal-width confidence bins
(top-label: confidence = the largest probability, correct = its class is the true one), the
multi-class Brier score (mean over images of sum_k (p_k - [y = k])^2; for two classes it is twice
sklearn's `brier_score_loss` of the positive class) and the negative log-likelihood. One
temperature T, fitted on held-out predictions (validation, or out-of-fold), rescales the logits:
p = softmax(log p / T); it changes no argmax, only how sure the model says it is.

Operating points: clinicians need a threshold with a known sensitivity (or specificity), not an
argmax. For one class against the rest, `threshold_for` picks, on held-out scores, the highest
threshold whose sensitivity reaches the target (or the lowest whose specificity does), and
`rates_at` reports sensitivity, specificity, PPV and NPV at a threshold with Wilson 95 % intervals.
"""

import math

import numpy as np

ECE_BINS = 15
_EPS = 1e-12


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
  if probs.ndim != 2 or len(probs) != len(labels) or not len(labels):
    raise ValueError(f"probs must be (N, K) and labels (N,), N > 0; got {probs.shape}, {labels.shape}")
  return probs, labels


def binned(confidence, outcome, bins: int = ECE_BINS) -> dict:
  """Equal-width bins over [0, 1] (the first closed, as sklearn's calibration_curve): per
  non-empty bin, the mean confidence, the mean outcome and the count."""
  confidence, outcome = np.asarray(confidence, np.float64), np.asarray(outcome, np.float64)
  index = np.clip(np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], confidence, side="right"),
                  0, bins - 1)
  count = np.bincount(index, minlength=bins)
  used = count > 0
  mean = lambda v: np.bincount(index, v, minlength=bins)[used] / count[used]
  return {"confidence": mean(confidence), "outcome": mean(outcome), "count": count[used],
          "bin": np.flatnonzero(used)}


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
  probs, labels = _check(probs, labels)
  b = binned(probs.max(1), probs.argmax(1) == labels, bins)
  return float(np.sum(b["count"] * np.abs(b["outcome"] - b["confidence"])) / len(labels))


def brier_score(probs, labels) -> float:
  probs, labels = _check(probs, labels)
  onehot = np.eye(probs.shape[1])[labels]
  return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def negative_log_likelihood(probs, labels) -> float:
  probs, labels = _check(probs, labels)
  return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0))))


def calibration_metrics(probs, labels) -> dict:
  return {"ece": expected_calibration_error(probs, labels), "brier": brier_score(probs, labels),
          "nll": negative_log_likelihood(probs, labels)}


def apply_temperature(probs, temperature: float) -> np.ndarray:
  """softmax(log p / T): the probabilities of logits divided by T (log p differs from the
  logits by a constant per row, which softmax ignores)."""
  z = np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0)) / temperature
  z -= z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs, labels, low: float = 0.05, high: float = 20.0) -> float:
  """The T in [low, high] minimising the NLL of apply_temperature(probs, T): golden-section
  search on log T (the NLL is convex in 1/T), to 1e-6 in log T."""
  probs, labels = _check(probs, labels)
  loss = lambda log_t: negative_log_likelihood(apply_temperature(probs, math.exp(log_t)), labels)
  a, b = math.log(low), math.log(high)
  ratio = (math.sqrt(5) - 1) / 2
  c, d = b - ratio * (b - a), a + ratio * (b - a)
  fc, fd = loss(c), loss(d)
  while b - a > 1e-6:
    if fc < fd:
      b, d, fd = d, c, fc
      c = b - ratio * (b - a)
      fc = loss(c)
    else:
      a, c, fc = c, d, fd
      d = a + ratio * (b - a)
      fd = loss(d)
  return float(math.exp((a + b) / 2))


def threshold_for(scores, positive, target: float, by: str = "sensitivity") -> float:
  """The threshold t (predict positive when score >= t) chosen on held-out data: the highest t
  whose sensitivity is at least `target` (by='sensitivity'), or the lowest t whose specificity
  is at least `target` (by='specificity'). The candidates are the scores themselves."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  if not positive.any() or positive.all():
    raise ValueError("a threshold needs held-out examples of both the class and the rest")
  if not 0 < target <= 1:
    raise ValueError(f"target must be in (0, 1], got {target}")
  candidates = np.unique(scores)[::-1]  # high to low: sensitivity rises, specificity falls
  tpr = np.array([np.mean(scores[positive] >= t) for t in candidates])
  tnr = np.array([np.mean(scores[~positive] < t) for t in candidates])
  if by == "sensitivity":
    return float(candidates[np.flatnonzero(tpr >= target)[0]])
  if by == "specificity":
    ok = np.flatnonzero(tnr >= target)
    return float(candidates[ok[-1]]) if len(ok) else float(np.nextafter(candidates[0], np.inf))
  raise ValueError(f"by must be 'sensitivity' or 'specificity', got {by!r}")


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> list | None:
  """Wilson score 95 % interval of a proportion (None when total is 0)."""
  if total == 0:
    return None
  p = successes / total
  centre = (p + z * z / (2 * total)) / (1 + z * z / total)
  half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
  return [max(0.0, centre - half), min(1.0, centre + half)]


def rates_at(scores, positive, threshold: float) -> dict:
  """Sensitivity, specificity, PPV and NPV at `threshold`, each with its Wilson interval."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  called = scores >= threshold
  tp, fn = int(np.sum(called & positive)), int(np.sum(~called & positive))
  tn, fp = int(np.sum(~called & ~positive)), int(np.sum(called & ~positive))
  out = {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
  for name, hit, total in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                           ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
    out[name] = hit / total if total else None
    out[f"{name}_ci95"] = wilson_interval(hit, total)
  return out
