"""The metrics of one split from its logits: what validation and test report after each epoch."""

import numpy as np

from jaxmed.evaluation import metrics as metrics_lib


def log_softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def summarize(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
  """Loss, accuracy, macro F1, per-class scores, AUC and the confusion matrix of one split."""
  log_probs = log_softmax(logits.astype(np.float64))
  predictions = log_probs.argmax(-1)
  cm = metrics_lib.confusion_matrix(labels, predictions, len(classes))
  result = metrics_lib.classification_metrics(cm, classes)
  result["loss"] = float(-log_probs[np.arange(len(labels)), labels].mean())
  result["auc"] = metrics_lib.one_vs_rest_auc(labels, np.exp(log_probs))
  result["num_examples"] = int(len(labels))
  return result
