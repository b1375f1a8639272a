"""How a trained model's probabilities become a decision: the temperature fitted on validation
(`python -m jaxmed.evaluate --calibrate`, WORKDIR/calibration.json) and the per-class thresholds
chosen there for a target sensitivity or specificity (WORKDIR/operating_points.json). predict
applies both, from a workdir or from an export bundle (which carries them in its header)."""

import json
from pathlib import Path

import numpy as np

from jaxmed.evaluation import calibration


def read_decision(workdir) -> dict:
  """{'temperature': T or None, 'thresholds': {class: t} or None, 'by', 'target', 'calibrated'}."""
  workdir = Path(workdir)
  decision = {"temperature": None, "thresholds": None}
  if (workdir / "calibration.json").exists():
    decision["temperature"] = json.loads((workdir / "calibration.json").read_text())["temperature"]
  if (workdir / "operating_points.json").exists():
    points = json.loads((workdir / "operating_points.json").read_text())
    decision.update(thresholds=points["thresholds"], by=points["by"], target=points["target"],
                    calibrated=points.get("calibrated", False))
  return decision


def decision_of(predictor) -> dict:
  """A LoadedRun's (from its workdir's files) or a Bundle's (from its header)."""
  header, workdir = getattr(predictor, "header", None), getattr(predictor, "workdir", None)
  if header is not None:
    return header.get("decision") or {"temperature": None, "thresholds": None}  # ensembles: none
  return read_decision(workdir) if workdir else {"temperature": None, "thresholds": None}


def calibrated(probs: np.ndarray, decision: dict) -> np.ndarray:
  t = decision.get("temperature")
  return calibration.apply_temperature(probs, t) if t else np.asarray(probs)


def threshold_scores(probs: np.ndarray, decision: dict) -> np.ndarray:
  """The probabilities the stored thresholds apply to: calibrated when they were chosen on
  calibrated ones, as they were otherwise."""
  return calibrated(probs, decision) if decision.get("calibrated") else np.asarray(probs)


def at_operating_points(probs: np.ndarray, classes, decision: dict) -> list[dict] | None:
  """Per image, {class: probability >= its threshold} (None when no thresholds are stored)."""
  thresholds = decision.get("thresholds")
  if not thresholds:
    return None
  scores = threshold_scores(probs, decision)
  return [{c: bool(p[k] >= thresholds[c]) for k, c in enumerate(classes) if c in thresholds}
          for p in scores]
