"""Classify image files, folders and archives with a trained run or an exported bundle: one
record per file, in order; a file that cannot be read is an error record, never an abort.
"""

import csv
import io
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from jaxmed.data import archive, discover, folder


def expand_inputs(paths) -> tuple[list[str], list[dict], list[str]]:
  """Image references (files, images below folders, image members of archives) in the given
  order, error records for inputs that do not exist or hold no images, and one warning line
  per archive whose unsafe members (zip-slip, absolute, links, bombs) were refused unread."""
  refs, errors, warnings = [], [], []
  for p in map(str, paths):
    if os.path.isdir(p):
      files, _, _ = discover.walk(p)
      found = [str(Path(p, f)) for f in files if discover.is_image_name(f)
               and not any(discover.is_clutter(x) for x in f.split("/"))]
    elif archive.is_archive(p) and os.path.isfile(p):
      try:
        members, refused = archive.list_members(p)
      except Exception as e:  # a damaged archive is one bad input, not a crash
        errors.append({"path": p, "status": "error", "error": f"cannot read archive: {e}"})
        continue
      warnings += filter(None, [archive.refused_warning(p, refused)])
      found = [archive.make_ref(p, m) for m in sorted(members) if discover.is_image_name(m)
               and not any(discover.is_clutter(x) for x in m.split("/"))]
    elif os.path.exists(p) or archive.split_ref(p):
      found = [p]
    else:
      errors.append({"path": p, "status": "error", "error": "no such file or folder"})
      continue
    if not found:
      errors.append({"path": p, "status": "error", "error": "no images found"})
    refs += found
  return refs, errors, warnings


def load_predictor(workdir=None, bundle=None, checkpoint: str = "best"):
  """A LoadedRun (from a workdir) or a Bundle: both have classes, model, variables, image_size."""
  if bool(workdir) == bool(bundle):
    raise ValueError("pass exactly one of --workdir and --bundle")
  if bundle:
    from jaxmed.evaluation.bundle import load_bundle
    return load_bundle(bundle)
  from jaxmed.evaluation.trained_run import load_run
  return load_run(workdir, checkpoint)


def _safe_name(ref: str) -> str:
  stem = os.path.splitext(ref)[0] if discover.is_image_name(ref) else ref
  return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.strip("/")).strip("_")[-120:] or "image"


def predict_files(predictor, paths, batch_size: int = 32, gradcam_dir=None) -> list[dict]:
  """One record per input file, in order: {'path', 'status': 'ok', 'predicted', 'confidence',
  'probs': {class: p}} or {'path', 'status': 'error', 'error'}. With a stored temperature the
  probabilities are calibrated ('temperature'); with stored thresholds 'at_operating_point' says
  per class whether the image reaches it (jaxmed/evaluation/decision.py)."""
  refs, input_errors, warnings = expand_inputs(paths)
  for line in warnings:
    print(line, file=sys.stderr)
  records, images, ok_refs = [], [], []
  for ref in refs:
    try:
      images.append(folder.decode_image(ref, predictor.image_size))
      ok_refs.append(ref)
    except ValueError as e:
      records.append({"path": ref, "status": "error", "error": str(e).removeprefix(f"{ref}: ")})
  if images:
    from jaxmed.evaluation.decision import at_operating_points, calibrated, decision_of
    from jaxmed.evaluation.predictions import predict_probs
    batch = np.stack(images)
    members = getattr(predictor, "members", None) or [predictor.variables]  # a fold ensemble
    raw = np.mean([predict_probs(predictor.model, variables, batch, min(batch_size, len(batch)))
                   for variables in members], axis=0)
    decision = decision_of(predictor)  # the stored temperature and thresholds, if any
    probs, flags = calibrated(raw, decision), at_operating_points(raw, predictor.classes, decision)
    cams = None
    if gradcam_dir:
      from jaxmed.evaluation import gradcam
      cams = np.concatenate([gradcam.gradcam(predictor.model, predictor.variables,
                                             batch[i:i + batch_size])[0]
                             for i in range(0, len(batch), batch_size)])
    for i, (ref, p) in enumerate(zip(ok_refs, probs)):
      k = int(np.argmax(p))
      record = {"path": ref, "status": "ok", "predicted": predictor.classes[k],
                "confidence": float(p[k]),
                "probs": {c: round(float(x), 6) for c, x in zip(predictor.classes, p)}}
      if decision.get("temperature"):
        record["temperature"] = decision["temperature"]
      if flags is not None:  # each class against its stored threshold (one vs rest)
        record["at_operating_point"] = flags[i]
      if cams is not None:
        out = Path(gradcam_dir) / f"{i:04d}_{_safe_name(ref)}.png"
        record["gradcam"] = str(gradcam.save_overlay(out, batch[i], cams[i]))
      records.append(record)
  order = {r: i for i, r in enumerate(refs)}
  return sorted(records, key=lambda r: order[r["path"]]) + input_errors


def format_records(records: list[dict], classes: list[str], fmt: str = "table") -> str:
  if fmt == "json":
    return json.dumps(records, indent=1)
  if fmt == "csv":
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "status", "predicted", "confidence"] + [f"p_{c}" for c in classes] + ["error"])
    for r in records:
      probs = [r["probs"][c] for c in classes] if r["status"] == "ok" else [""] * len(classes)
      writer.writerow([r["path"], r["status"], r.get("predicted", ""), r.get("confidence", "")]
                      + probs + [r.get("error", "")])
    return buffer.getvalue()
  width = min(60, max([4] + [len(r["path"]) for r in records]))
  cls_w = max([9] + [len(c) for c in classes])
  lines = [f"{'file':<{width}}  {'predicted':<{cls_w}} {'conf':>6}  "
           + " ".join(f"{c[:10]:>10}" for c in classes)]
  for r in records:
    name = r["path"] if len(r["path"]) <= width else "..." + r["path"][-(width - 3):]
    if r["status"] == "ok":
      lines.append(f"{name:<{width}}  {r['predicted']:<{cls_w}} {r['confidence']:>6.3f}  "
                   + " ".join(f"{r['probs'][c]:>10.3f}" for c in classes))
    else:
      lines.append(f"{name:<{width}}  ERROR: {r['error']}")
  return "\n".join(lines) + "\n"
