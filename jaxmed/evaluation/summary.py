"""Predictions over a device-resident split, and the metrics computed from them."""

import numpy as np

from jaxmed.evaluation import metrics as metrics_lib


def predict_logits(eval_step, params, batch_stats, images, index: np.ndarray, batch_size: int):
  """Logits (len(index), K) as numpy for images[index] on the device. The last batch is padded
  (repeating the first index) so every call has one shape and one compiled program serves all."""
  outputs = []
  for start in range(0, len(index), batch_size):
    chunk = np.asarray(index[start:start + batch_size], np.int32)
    padded = np.pad(chunk, (0, batch_size - len(chunk)), constant_values=index[0])
    outputs.append(np.asarray(eval_step(params, batch_stats, images, padded))[:len(chunk)])
  return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


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
