"""k-fold cross-validation for small datasets: every training image is validated once, by the model
that did not train on it, and the folds' models average into an ensemble for the test split.

  W/cv_plan.json             what was asked (folds, seed, group regex, dataset): a rerun resumes
  W/manifests/fold-K.jsonl   fold K's split: train = the other folds, val = fold K, test = the
                             dataset's own test split (if any), unreadable files excluded
  W/fold-K/                  an ordinary workdir (resumable: a killed fold resumes at its step)
  W/fold-K/eval/{val,test}.json   the best checkpoint's predictions
  W/cv_summary.json          `folds` (each fold's val and test metrics), `oof` (out-of-fold metrics
                             with bootstrap intervals), `oof_calibration` (a temperature fitted
                             on the out-of-fold predictions, ECE/Brier/NLL before and after) and
                             `ensemble_test` (mean of the folds' test probabilities) when there
                             is a test split

Folds are stratified by class and keep groups whole: images whose names share the
`--group-regex` key (a patient), identical files (same sha256) and, with data.group_by='copies',
each cluster of augmented copies (data/copies.py) land in one fold.
"""

import json
from pathlib import Path

import numpy as np

from jaxmed.data import copies
from jaxmed.data import manifest as manifest_lib
from jaxmed.evaluation import calibration
from jaxmed.runtime.cli import UserError
from jaxmed.runtime.distributed import say


def assign_folds(labels, groups, k: int, seed: int) -> np.ndarray:
  """Fold index per example. Every group lands in one fold; groups are stratified by their most
  common label: within a label, shuffled groups go, largest first, to the fold holding the fewest
  images of that label so far (ties: fewest images overall, then the lowest fold)."""
  labels, groups = np.asarray(labels), np.asarray(groups, dtype=object)
  if k < 2:
    raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
  members = {}
  for i, g in enumerate(groups):
    members.setdefault(g, []).append(i)
  if len(members) < k:
    raise ValueError(f"{len(members)} groups of images cannot fill {k} folds")
  rng = np.random.default_rng(seed)
  by_label = {}
  for g, idx in members.items():
    values, counts = np.unique(labels[idx], return_counts=True)
    by_label.setdefault(int(values[np.argmax(counts)]), []).append(g)
  fold = np.full(len(labels), -1)
  per_label, per_fold = np.zeros((int(labels.max()) + 1, k)), np.zeros(k)
  for label in sorted(by_label):
    names = [by_label[label][i] for i in rng.permutation(len(by_label[label]))]
    for g in sorted(names, key=lambda g: -len(members[g])):  # stable: shuffled order breaks ties
      target = min(range(k), key=lambda f: (per_label[label, f], per_fold[f], f))
      fold[members[g]] = target
      per_label[label, target] += len(members[g])
      per_fold[target] += len(members[g])
  return fold


def _group_ids(paths, digests, group_regex, root, group_by=None) -> list[int]:
  """One id per image: images sharing a regex key, a sha256 or (group_by='copies') a copy
  cluster share an id."""
  keyings = [manifest_lib.group_keys(paths, group_regex, root) if group_regex
             else [f"f:{p}" for p in paths],
             [f"sha:{d}" if d else f"f:{p}" for p, d in zip(paths, digests)]]
  if group_by == "copies":
    keyings.append(copies.copy_keys([str(p) for p in paths])[0])
  return copies.union_of(*keyings)


def fold_manifests(config, k: int, group_regex: str | None, out: Path) -> list[Path]:
  """Writes W/manifests/fold-K.jsonl for K = 0..k-1 from the config's dataset (train and val
  pooled; test kept as it is)."""
  from jaxmed.data.load import list_data
  spec, listing = list_data(config)
  lists = dict(listing.lists)
  decoded, bad = manifest_lib.check_readable(lists)
  pooled = [s for s in ("train", "val") if s in decoded]
  paths = [p for s in pooled for p in decoded[s].paths]
  labels = np.concatenate([decoded[s].labels for s in pooled]).astype(int)
  digests = [d for s in pooled for d in decoded[s].sha256]
  root = listing.found.root if listing.found is not None and listing.found.kind == "folder" else ""
  group_by = config.data.get("group_by")
  groups = _group_ids(paths, digests, group_regex, root, group_by)
  folds = assign_folds(labels, groups, k, config.seed)
  row = manifest_lib.row
  classes = listing.classes
  test = ([row(classes, p, l, "test", d) for p, l, d in
           zip(decoded["test"].paths, decoded["test"].labels, decoded["test"].sha256)]
          if "test" in decoded else [])
  excluded = [row(classes, p, l, manifest_lib.EXCLUDED, None, f"unreadable in {s}: {e}")
              for p, l, s, e in bad]
  written = []
  for f in range(k):
    rows = [row(classes, p, l, "val" if folds[i] == f else "train", digests[i])
            for i, (p, l) in enumerate(zip(paths, labels))]
    path = out / f"fold-{f}.jsonl"
    manifest_lib.write(path, classes, rows + test + excluded, source=spec, force=True,
                       method={"crossval": {"folds": k, "fold": f, "seed": config.seed,
                                            "group_regex": group_regex, "group_by": group_by}})
    written.append(path)
  return written


def _plan(config, k: int, group_regex) -> dict:
  plan = {"folds": k, "seed": config.seed, "group_regex": group_regex,
          "data_root": str(config.data.root), "manifest": str(config.data.get("manifest"))}
  if config.data.get("group_by"):  # only when set: plans written before it existed still resume
    plan["group_by"] = config.data.group_by
  return plan


def run_crossval(config, workdir, k: int = 5, group_regex: str | None = None) -> dict:
  """Trains (or resumes) every fold, evaluates each fold's best checkpoint on its held-out fold
  and on test, and writes W/cv_summary.json; returns it."""
  from jaxmed.evaluation.evaluator import compute_metrics, evaluate_workdir
  from jaxmed.training import loop
  workdir = Path(workdir)
  plan_path, plan = workdir / "cv_plan.json", _plan(config, k, group_regex)
  if plan_path.exists():
    if json.loads(plan_path.read_text()) != plan:
      raise UserError(f"--workdir {workdir} holds a cross-validation with another plan "
                      f"({plan_path}); pass another --workdir")
  else:
    workdir.mkdir(parents=True, exist_ok=True)
    fold_manifests(config, k, group_regex, workdir / "manifests")
    plan_path.write_text(json.dumps(plan, indent=1))  # after the manifests: they are complete
  folds, oof, test_probs, test_labels, classes = [], [], [], None, None
  for f in range(k):
    fold_dir = workdir / f"fold-{f}"
    fold_config = config.copy_and_resolve_references()
    fold_config.data.manifest = str(workdir / "manifests" / f"fold-{f}.jsonl")
    if not (fold_dir / "summary.json").exists():
      say(f"=== fold {f + 1}/{k}: {fold_dir}")
      loop.fit(fold_config, fold_dir, config_name=f"fold-{f}")
    val, _ = evaluate_workdir(fold_dir, split="val")
    classes = val["classes"]
    record = {"fold": f, "workdir": str(fold_dir), "val": _headline(val)}
    oof += [(p["path"], p["label"], p["probs"]) for p in val["predictions"]]
    summary = json.loads((fold_dir / "summary.json").read_text())
    if "test" in summary:
      test, _ = evaluate_workdir(fold_dir, split="test")
      record["test"] = _headline(test)
      test_probs.append(np.array([p["probs"] for p in test["predictions"]]))
      test_labels = np.array([p["label"] for p in test["predictions"]])
    folds.append(record)
  oof_probs, oof_labels = np.array([p for _, _, p in oof]), np.array([l for _, l, _ in oof])
  result = {"classes": classes, "folds": folds, "plan": plan,
            "oof": _headline(compute_metrics(oof_probs, oof_labels, classes)),
            "oof_predictions": [{"path": p, "label": int(l), "probs": q} for p, l, q in oof]}
  result["oof_calibration"] = _oof_temperature(oof_probs, oof_labels)
  if test_probs:
    ensemble = np.mean(test_probs, axis=0)
    result["ensemble_test"] = _headline(compute_metrics(ensemble, test_labels, classes))
    result["ensemble_test"]["calibration_at_oof_temperature"] = calibration.calibration_metrics(
        calibration.apply_temperature(ensemble, result["oof_calibration"]["temperature"]), test_labels)
  tmp = workdir / "cv_summary.json.tmp"
  tmp.write_text(json.dumps(result, indent=1))
  tmp.replace(workdir / "cv_summary.json")
  return result


def _oof_temperature(probs, labels) -> dict:
  """One temperature fitted on the out-of-fold predictions (every training image, each predicted
  by the model that did not train on it): what `evaluate --calibrate` fits on a validation
  split, with all the data behind it. Reported, not applied: it was fitted for single fold models,
  and the fold ensemble's averaged probabilities are already softer (ensemble_test shows its
  calibration both ways)."""
  temperature = calibration.fit_temperature(probs, labels)
  return {"temperature": temperature, "fitted_on": "oof",
          "before": calibration.calibration_metrics(probs, labels),
          "after": calibration.calibration_metrics(calibration.apply_temperature(probs, temperature), labels)}


def _headline(result: dict) -> dict:
  """What a fold table needs from evaluate's result (no predictions)."""
  keys = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "ci95", "calibration",
          "num_examples", "confusion_matrix")
  return {k: result[k] for k in keys if k in result}
