"""Evaluate a trained run on a split: every number the report shows (per-class precision,
recall = sensitivity, specificity, F1, macro/weighted averages, one-vs-rest ROC-AUC, the
confusion matrix, 95 % bootstrap intervals) plus every prediction, written to
WORKDIR/eval/<name>.json."""

import json
from pathlib import Path

import numpy as np

from jaxmed.data import folder
from jaxmed.evaluation import metrics as metrics_lib
from jaxmed.evaluation.predictions import predict_probs


def _averages(per_class: dict, classes) -> dict:
  keys = ("precision", "recall", "specificity", "f1")
  values = np.array([[per_class[c][k] for k in keys] for c in classes], float)
  support = np.array([per_class[c]["support"] for c in classes], float)
  weighted = (values * support[:, None]).sum(0) / support.sum() if support.sum() else values[0] * 0
  return {"macro": dict(zip(keys, map(float, values.mean(0)))),
          "weighted": dict(zip(keys, map(float, weighted)))}


def compute_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str],
                    bootstrap: int = 1000, seed: int = 0) -> dict:
  """Every number the report shows, from probabilities and true labels."""
  labels = np.asarray(labels, np.int64)
  predicted = np.asarray(probs).argmax(-1)
  cm = metrics_lib.confusion_matrix(labels, predicted, len(classes))
  result = metrics_lib.classification_metrics(cm, classes)
  result["averages"] = _averages(result["per_class"], classes)
  result["auc"] = metrics_lib.one_vs_rest_auc(labels, probs)
  result["ci95"] = {m: list(metrics_lib.bootstrap_ci(labels, predicted, len(classes), m,
                                                      n=bootstrap, seed=seed))
                    for m in ("accuracy", "macro_f1")}
  result["num_examples"] = int(len(labels))
  return result


def evaluate_split(run, split: folder.Split, tta: int = 1, batch_size: int = 64) -> dict:
  """Metrics plus every prediction (path, true, predicted, probabilities) of one split."""
  probs = predict_probs(run.model, run.variables, split.images, batch_size, tta)
  result = compute_metrics(probs, split.labels, run.classes)
  result["tta"] = tta
  result["predictions"] = [
      {"path": p, "label": int(t), "predicted": int(np.argmax(q)), "probs": [round(float(x), 6) for x in q]}
      for p, t, q in zip(split.paths, split.labels, probs)]
  return result


def format_result(result: dict, classes) -> str:
  auc = result["auc"]
  lines = [metrics_lib.format_table(result, classes, digits=3)]
  lines.append(f"balanced accuracy {result['balanced_accuracy']:.3f}")
  for m, (lo, hi) in result["ci95"].items():
    lines.append(f"{m:17s} {result[m]:.3f}  95% CI [{lo:.3f}, {hi:.3f}] (bootstrap)")
  fmt = lambda a: "n/a" if a is None else f"{a:.3f}"
  per = ", ".join(f"{c} {fmt(a)}" for c, a in zip(classes, auc["per_class"]))
  lines.append(f"ROC-AUC (one-vs-rest) macro {fmt(auc['macro'])}: {per}")
  width = max(len(c) for c in classes)
  lines.append("\nconfusion matrix (rows = true, columns = predicted)")
  lines.append(" " * width + "".join(f" {c:>{max(6, len(c))}}" for c in classes))
  for c, row in zip(classes, result["confusion_matrix"]):
    lines.append(f"{c:>{width}}" + "".join(f" {n:>{max(6, len(k))}}" for n, k in zip(row, classes)))
  return "\n".join(lines)




def evaluate_workdir(workdir, data: str | None = None, split: str = "test", tta: int = 1,
                     checkpoint: str = "best", name: str | None = None) -> tuple[dict, Path]:
  """Evaluates `workdir`'s model on its own `split` (or on the folder `data`) and writes the
  result to WORKDIR/eval/<name>.json (name: the split, or the data folder's name)."""
  from jaxmed.data.load import load_split
  from jaxmed.evaluation.trained_run import load_run
  from jaxmed.runtime.run_info import machine
  run = load_run(workdir, checkpoint)
  result = evaluate_split(run, load_split(run, data, split), tta)
  result.update(split=split, data=data, checkpoint=checkpoint, classes=run.classes,
                machine=machine())
  name = name or (Path(data.rstrip("/")).name if data else split)
  out = Path(workdir) / "eval" / f"{name}.json"
  out.parent.mkdir(exist_ok=True)
  out.write_text(json.dumps(result, indent=1))
  return result, out
