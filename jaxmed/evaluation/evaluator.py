"""Evaluate a trained run on a split: every number the report shows (per-class precision,
recall = sensitivity, specificity, F1, macro/weighted averages, one-vs-rest ROC-AUC, the
confusion matrix, 95 % bootstrap intervals) plus every prediction, written to
WORKDIR/eval/<name>.json."""

import json
from pathlib import Path

import numpy as np

from jaxmed.data import folder
from jaxmed.evaluation import calibration
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
  result["calibration"] = calibration.calibration_metrics(probs, labels)
  return result


def evaluate_split(run, split: folder.Split, tta: int = 1, batch_size: int = 64,
                   probs: np.ndarray | None = None) -> dict:
  """Metrics plus every prediction (path, true, predicted, probabilities) of one split."""
  if probs is None:
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
  lines.append(format_calibration(result.get("calibration")))
  for name, point in result.get("operating_points", {}).items():
    r, v = point["evaluated"], point["val"]
    ci = lambda key: "" if r[f"{key}_ci95"] is None else (
        f" [{r[f'{key}_ci95'][0]:.3f}, {r[f'{key}_ci95'][1]:.3f}]")
    val_rate = v[point["by"]]
    lines.append(f"{name} vs rest at threshold {point['threshold']:.4f} (validation "
                 f"{point['by']} {val_rate:.3f} >= {point['target']}): " + ", ".join(
                     f"{k} {fmt(r[k])}{ci(k)}" for k in ("sensitivity", "specificity", "ppv", "npv")))
  lines.append("\nconfusion matrix (rows = true, columns = predicted)")
  lines.append(" " * width + "".join(f" {c:>{max(6, len(c))}}" for c in classes))
  for c, row in zip(classes, result["confusion_matrix"]):
    lines.append(f"{c:>{width}}" + "".join(f" {n:>{max(6, len(k))}}" for n, k in zip(row, classes)))
  return "\n".join(lines)




def calibrate(result: dict, probs, labels, held_out_probs, held_out_labels) -> np.ndarray:
  """Fits one temperature on the held-out predictions; adds `calibration` before/after and the
  temperature to `result`; returns the evaluated split's calibrated probabilities."""
  temperature = calibration.fit_temperature(held_out_probs, held_out_labels)
  calibrated = calibration.apply_temperature(probs, temperature)
  result["calibration"] = {
      "temperature": temperature, "fitted_on": "val",
      "before": calibration.calibration_metrics(probs, labels),
      "after": calibration.calibration_metrics(calibrated, labels),
      "fitted_on_before": calibration.calibration_metrics(held_out_probs, held_out_labels),
      "fitted_on_after": calibration.calibration_metrics(
          calibration.apply_temperature(held_out_probs, temperature), held_out_labels)}
  return calibrated


def operating_points(classes, probs, labels, held_out_probs, held_out_labels, by: str,
                     target: float) -> dict:
  """Per class (one vs rest): the threshold reaching `target` sensitivity or specificity on the
  held-out predictions, and the rates with intervals it gives there and on the evaluated split."""
  points = {}
  for c, name in enumerate(classes):
    threshold = calibration.threshold_for(held_out_probs[:, c], held_out_labels == c, target, by)
    points[name] = {"by": by, "target": target, "threshold": threshold,
                    "chosen_on": "val", "val": calibration.rates_at(
                        held_out_probs[:, c], held_out_labels == c, threshold),
                    "evaluated": calibration.rates_at(probs[:, c], labels == c, threshold)}
  return points


def format_calibration(c: dict | None) -> str:
  if not c:
    return ""
  if "temperature" not in c:
    return f"calibration: ECE {c['ece']:.4f}, Brier {c['brier']:.4f}, NLL {c['nll']:.4f}"
  b, a = c["before"], c["after"]
  return (f"calibration (temperature {c['temperature']:.3f} fitted on {c['fitted_on']}): "
          f"ECE {b['ece']:.4f} -> {a['ece']:.4f}, Brier {b['brier']:.4f} -> {a['brier']:.4f}, "
          f"NLL {b['nll']:.4f} -> {a['nll']:.4f}")


def evaluate_workdir(workdir, data: str | None = None, split: str = "test", tta: int = 1,
                     checkpoint: str = "best", name: str | None = None, calibrate_on_val=False,
                     target: tuple[str, float] | None = None) -> tuple[dict, Path]:
  """Evaluates `workdir`'s model on its own `split` (or on the folder `data`) and writes the
  result to WORKDIR/eval/<name>.json (name: the split, or the data folder's name).

  `calibrate_on_val`: fit a temperature on the run's validation split, report calibration before
  and after, store it in WORKDIR/calibration.json. `target` ('sensitivity' or 'specificity',
  value): choose each class's threshold on validation, report it with the rates it gives on the
  evaluated split, store them in WORKDIR/operating_points.json."""
  from jaxmed.data.load import load_split
  from jaxmed.evaluation.trained_run import load_run
  from jaxmed.runtime.run_info import machine
  run = load_run(workdir, checkpoint)
  evaluated = load_split(run, data, split, run.config.data.get("decoded_cache", True))
  probs = predict_probs(run.model, run.variables, evaluated.images, 64, tta)
  result = evaluate_split(run, evaluated, tta, probs=probs)
  if calibrate_on_val or target:
    val = load_split(run, None, "val")  # thresholds and temperatures are never chosen on test
    val_probs = predict_probs(run.model, run.variables, val.images, 64, tta)
    labels = np.asarray(evaluated.labels)
    if calibrate_on_val:
      probs = calibrate(result, probs, labels, val_probs, np.asarray(val.labels))
      val_probs = calibration.apply_temperature(val_probs, result["calibration"]["temperature"])
      _write(Path(workdir) / "calibration.json", {
          "temperature": result["calibration"]["temperature"], "fitted_on": "val",
          "checkpoint": checkpoint, "tta": tta, "num_examples": len(val.labels)})
    if target:
      result["operating_points"] = operating_points(run.classes, probs, labels, val_probs,
                                                    np.asarray(val.labels), *target)
      _write(Path(workdir) / "operating_points.json", {
          "checkpoint": checkpoint, "calibrated": bool(calibrate_on_val),
          "thresholds": {c: p["threshold"] for c, p in result["operating_points"].items()},
          "by": target[0], "target": target[1]})
  result.update(split=split, data=data, checkpoint=checkpoint, classes=run.classes,
                machine=machine())
  name = name or (Path(data.rstrip("/")).name if data else split)
  out = Path(workdir) / "eval" / f"{name}.json"
  out.parent.mkdir(exist_ok=True)
  out.write_text(json.dumps(result, indent=1))
  return result, out


def _write(path: Path, record: dict):
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(record, indent=1))
  tmp.replace(path)
