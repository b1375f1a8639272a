"""Classification metrics in pure numpy, matching scikit-learn's conventions.

sklearn is only a test dependency: the tests check every number here against it. Conventions
followed: per-class scores over labels 0..K-1 with zero_division=0, macro averages over all K
labels, balanced accuracy over the classes present in y_true, ROC-AUC via average ranks.
All returned values are plain python floats/ints (or None) so `json.dumps` works directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_labels(y: np.ndarray, num_classes: int, name: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
  if y.size and not np.issubdtype(y.dtype, np.integer):
    if not np.all(np.equal(np.mod(y, 1), 0)):
      raise ValueError(f"{name} must contain integer class indices")
  y = y.astype(np.int64)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"{name} has labels outside [0, {num_classes})")
  return y


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
  """Counts as int64 of shape (K, K): rows = true class, columns = predicted class."""
  y_true = _as_labels(y_true, num_classes, "y_true")
  y_pred = _as_labels(y_pred, num_classes, "y_pred")
  if y_true.shape != y_pred.shape:
    raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
  flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
  num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
  out = np.zeros(num.shape)
  np.divide(num, den, out=out, where=den != 0)
  return out


def _f1_from_counts(tp, fp, fn) -> np.ndarray:
  # sklearn computes F1 from counts (not from P and R), so 0/0 -> 0 exactly as here.
  return _safe_div(2 * tp, 2 * tp + fp + fn)


def classification_metrics(cm: np.ndarray, class_names: Sequence[str]) -> dict:
  """Summary metrics from a (K, K) confusion matrix (rows = true) with names in class order."""
  cm = np.asarray(cm, dtype=np.int64)
  k = len(class_names)
  if cm.shape != (k, k):
    raise ValueError(f"confusion matrix shape {cm.shape} does not match {k} class names")
  if len(set(class_names)) != k:
    raise ValueError("class_names must be unique (they key the per-class dict)")
  tp = np.diag(cm).astype(float)
  support = cm.sum(axis=1).astype(float)  # true examples per class
  predicted = cm.sum(axis=0).astype(float)
  total = float(cm.sum())
  fp, fn = predicted - tp, support - tp
  tn = total - tp - fp - fn

  precision = _safe_div(tp, predicted)
  recall = _safe_div(tp, support)
  specificity = _safe_div(tn, tn + fp)
  f1 = _f1_from_counts(tp, fp, fn)
  present = support > 0  # sklearn's balanced_accuracy ignores classes absent from y_true

  per_class = {
      str(name): {
          "precision": float(precision[i]),
          "recall": float(recall[i]),
          "specificity": float(specificity[i]),
          "f1": float(f1[i]),
          "support": int(support[i]),
      }
      for i, name in enumerate(class_names)
  }
  return {
      "accuracy": float(tp.sum() / total) if total else 0.0,
      "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
      "macro_f1": float(f1.mean()),
      "weighted_f1": float(_safe_div((f1 * support).sum(), total)),
      "macro_precision": float(precision.mean()),
      "macro_recall": float(recall.mean()),
      "per_class": per_class,
      "confusion_matrix": cm.tolist(),
  }


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks with ties given their mean rank (scipy.stats.rankdata 'average')."""
  order = np.argsort(x, kind="mergesort")
  xs = x[order]
  # Start index of each run of equal values in sorted order.
  starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
  ends = np.r_[starts[1:], xs.size]
  mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
  ranks = np.empty(x.size)
  ranks[order] = np.repeat(mean_rank, ends - starts)
  return ranks


def binary_auc(scores, positive) -> float | None:
  """ROC-AUC of `scores` for the examples marked `positive` (bool, or 0/1), as
  sklearn.metrics.roc_auc_score(positive, scores): the Mann-Whitney U statistic
  (sum of positive ranks - P(P+1)/2) / (P*N) with average ranks, so a tied positive/negative
  pair counts a half. None when there are no positives or no negatives (AUC undefined).
  """
  scores = np.asarray(scores, dtype=float)
  positive = np.asarray(positive)
  if scores.ndim != 1 or scores.shape != positive.shape:
    raise ValueError(f"scores {scores.shape} and positive {positive.shape} must be 1-D, same length")
  if positive.dtype != bool:
    if not np.all((positive == 0) | (positive == 1)):
      raise ValueError("positive must be boolean or 0/1")
    positive = positive == 1
  n_pos = int(positive.sum())
  n_neg = positive.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return None
  u = _average_ranks(scores)[positive].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def one_vs_rest_auc(y_true, probs) -> dict:
  """Per-class one-vs-rest ROC-AUC and their macro mean.

  Uses the Mann-Whitney U statistic: AUC = (sum of positive ranks - P(P+1)/2) / (P*N), which
  counts tied scores as half, exactly as sklearn's trapezoidal ROC-AUC. Classes with no positive
  or no negative examples have an undefined AUC: None, and left out of the macro mean.
  Returns {"per_class": [auc or None, ...], "macro": float or None}.
  """
  probs = np.asarray(probs, dtype=float)
  if probs.ndim != 2:
    raise ValueError(f"probs must be (N, K), got shape {probs.shape}")
  y_true = _as_labels(y_true, probs.shape[1], "y_true")
  if y_true.shape[0] != probs.shape[0]:
    raise ValueError("y_true and probs differ in length")
  per_class = [binary_auc(probs[:, c], y_true == c) for c in range(probs.shape[1])]
  defined = [a for a in per_class if a is not None]
  return {"per_class": per_class, "macro": float(np.mean(defined)) if defined else None}


def _batched_stat(y_true, y_pred, idx, num_classes, metric) -> np.ndarray:
  """Metric for each row of resample indices idx (B, N), without a python loop over B."""
  t, p = y_true[idx], y_pred[idx]
  if metric == "accuracy":
    return (t == p).mean(axis=1)
  b = idx.shape[0]
  k = num_classes
  flat = (np.arange(b)[:, None] * k * k + t * k + p).ravel()
  cms = np.bincount(flat, minlength=b * k * k).reshape(b, k, k)
  tp = np.diagonal(cms, axis1=1, axis2=2)
  fp = cms.sum(axis=1) - tp
  fn = cms.sum(axis=2) - tp
  return _f1_from_counts(tp, fp, fn).mean(axis=1)


def _resamples(size: int, n: int, seed: int):
  """n bootstrap resamples of `size` example indices, in chunks of rows (B, size) so memory stays
  bounded (~4M indices at a time) on large evaluation sets."""
  rng = np.random.default_rng(seed)
  chunk = max(1, 4_000_000 // size)
  for start in range(0, n, chunk):
    yield rng.integers(0, size, size=(min(chunk, n - start), size))


def bootstrap_ci(y_true, y_pred, num_classes: int, metric: str = "accuracy", n: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
  """Percentile bootstrap (1 - alpha) interval for 'accuracy' or 'macro_f1'.

  Resamples examples with replacement n times (`_resamples`).
  """
  if metric not in ("accuracy", "macro_f1"):
    raise ValueError(f"metric must be 'accuracy' or 'macro_f1', got {metric!r}")
  if not 0 < alpha < 1:
    raise ValueError("alpha must be in (0, 1)")
  y_true = _as_labels(y_true, num_classes, "y_true")
  y_pred = _as_labels(y_pred, num_classes, "y_pred")
  if y_true.shape != y_pred.shape or y_true.size == 0:
    raise ValueError("y_true and y_pred must be non-empty and the same length")
  stats = [_batched_stat(y_true, y_pred, idx, num_classes, metric)
           for idx in _resamples(y_true.size, n, seed)]
  lo, hi = np.quantile(np.concatenate(stats), [alpha / 2, 1 - alpha / 2])
  return float(lo), float(hi)


def paired_bootstrap_ci(y_true, pred_a, pred_b, num_classes: int, metric: str = "accuracy",
                        n: int = 1000, seed: int = 0) -> dict:
  """`metric` of predictions b minus a on the same examples, with a paired percentile bootstrap
  95 % interval: each resample draws the examples once and scores both on them, so what
  the two share (hard images, easy ones) cancels. {'diff': point, 'ci95': [lo, hi]}."""
  if metric not in ("accuracy", "macro_f1"):
    raise ValueError(f"metric must be 'accuracy' or 'macro_f1', got {metric!r}")
  y_true = _as_labels(y_true, num_classes, "y_true")
  a = _as_labels(pred_a, num_classes, "pred_a")
  b = _as_labels(pred_b, num_classes, "pred_b")
  if not y_true.shape == a.shape == b.shape or y_true.size == 0:
    raise ValueError("y_true, pred_a and pred_b must be non-empty and the same length")
  diffs = [_batched_stat(y_true, b, idx, num_classes, metric)
           - _batched_stat(y_true, a, idx, num_classes, metric)
           for idx in _resamples(y_true.size, n, seed)]
  whole = np.arange(y_true.size)[None]
  point = (_batched_stat(y_true, b, whole, num_classes, metric)
           - _batched_stat(y_true, a, whole, num_classes, metric))[0]
  lo, hi = np.quantile(np.concatenate(diffs), [0.025, 0.975])
  return {"diff": float(point), "ci95": [float(lo), float(hi)]}


def format_table(metrics: dict, class_names: Sequence[str], digits: int = 2) -> str:
  """Text table laid out like sklearn's classification_report, plus a specificity column."""
  per_class = metrics["per_class"]
  cols = ("precision", "recall", "f1-score", "specificity", "support")
  keys = ("precision", "recall", "f1", "specificity")
  avg_names = ("accuracy", "macro avg", "weighted avg")
  width = max(max((len(str(n)) for n in class_names), default=0), len(avg_names[-1]), digits)
  head = " " * width + "".join(f" {c:>11}" for c in cols)

  def row(name, values, support):
    cells = "".join(" " * 12 if v is None else f" {v:>11.{digits}f}" for v in values)
    return f"{name:>{width}}{cells} {support:>11}"

  lines = [head, ""]
  rows = [per_class[str(n)] for n in class_names]
  for name, r in zip(class_names, rows):
    lines.append(row(str(name), [r[k] for k in keys], r["support"]))
  lines.append("")

  support = np.array([r["support"] for r in rows], dtype=float)
  total = int(support.sum())
  values = np.array([[r[k] for k in keys] for r in rows], dtype=float).reshape(-1, len(keys))
  macro = values.mean(axis=0) if len(rows) else np.zeros(len(keys))
  weighted = _safe_div((values * support[:, None]).sum(axis=0), total)
  # Accuracy sits in the f1-score column, as in sklearn.
  lines.append(row("accuracy", [None, None, metrics["accuracy"], None], total))
  lines.append(row("macro avg", macro, total))
  lines.append(row("weighted avg", weighted, total))
  return "\n".join(lines) + "\n"
