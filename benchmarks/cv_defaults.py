"""Which small-data defaults to ship, chosen by cross-validation on the shared train splits only
(issue #18 item 4): image size, schedule, augmentation strength, label smoothing, TTA, ensemble.

  JAXMED_SHARED=../shared python benchmarks/cv_defaults.py --dataset chest \
      [--variants base,smooth,...] [--workdir runs/cv_defaults] [--json FILE]

Per dataset, a fixed hold-out is carved from the shared train split first (by patient for the
chest X-rays; byte-identical files and copy clusters kept whole for the brain MRI), so the fold
ensemble has a test split that no fold saw. The rest is pooled and cut into 5 folds; every variant
uses the same folds (same seed, same groups), so its out-of-fold (OOF) predictions are for the
same images and variants are compared pairwise: the difference in OOF accuracy and macro-F1 to
`base` with a paired bootstrap 95 % interval (the same resampled images for both). Each variant is
one `python -m jaxmed.crossval` process (resumable: a rerun skips what is done), then its folds are
evaluated again with TTA views (jaxmed/evaluation/predictions.tta_views) for the TTA rows.

All at a quick budget (64 px, 1 frozen + 3 fine-tuning epochs unless the variant says otherwise) so
the grid fits in an hour of this 2-core CPU: a choice made there is a choice between settings at
that budget, not a tuned optimum at the configs' full schedule.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixed_costs import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--config.data.image_size=64", "--config.frozen.epochs=1", "--config.finetune.epochs=3"]
# Stronger than the presets: about 1.5x their rotation, shift, zoom and intensity ranges.
STRONG = {"xray": dict(rotation_range=12.0, width_shift_range=0.12, height_shift_range=0.12,
                       zoom_range=0.15, brightness_range=(0.7, 1.3), contrast_range=(0.7, 1.3),
                       gamma_range=(0.8, 1.25)),
          "mri": dict(rotation_range=15.0, width_shift_range=0.08, height_shift_range=0.08,
                      zoom_range=0.15, brightness_range=(0.75, 1.25), contrast_range=(0.75, 1.25))}
PATIENT = r"(person\d+|IM-\d+)"  # the Kermany file names carry the patient id
DATASETS = {
    "chest": dict(config="configs/chest_xray.py", data="data/chest_xray_pneumonia", preset="xray",
                  split_args=["--group-regex", PATIENT], cv_args=["--group-regex", PATIENT]),
    "brain": dict(config="configs/brain_tumor_mri.py", data="data/brain_tumor_mri/Training",
                  preset="mri", split_args=["--group-by", "copies"],
                  cv_args=["--config.data.group_by=copies"]),
}


# Intensity jitter off, the preset's geometry kept: does brightness/contrast/gamma jitter blur the
# opacity cue of pneumonia? (Measured on the chest X-rays: no, geometry alone did no better.)
GEOMETRIC_ONLY = dict(brightness_range=None, contrast_range=None, gamma_range=None)


def variants(preset: str) -> dict[str, tuple[list[str], dict | None]]:
  """name -> (command-line overrides, augment keys added to the preset or None)."""
  return {
      "base": ([], None),
      "smooth": (["--config.train.label_smoothing=0.1"], None),
      "aug_none": (["--config.augment.preset=none"], None),
      "aug_strong": ([], STRONG[preset]),
      "aug_geometric": ([], GEOMETRIC_ONLY),
      "longer": (["--config.finetune.epochs=6"], None),
      "aug_none_longer": (["--config.augment.preset=none", "--config.finetune.epochs=6"], None),
      "size96": (["--config.data.image_size=96"], None),
  }


def config_for(spec: dict, name: str, augment: dict | None, work: Path) -> str:
  """The dataset's config file, or one in `work` that adds `augment`'s keys to the preset (a
  command-line override cannot add a key the config does not have)."""
  if augment is None:
    return spec["config"]
  module = Path(spec["config"]).stem
  path = work / f"{module}_{name}.py"
  path.write_text(f"from jaxmed.configs import {module}\n\n\ndef get_config():\n"
                  f"  c = {module}.get_config()\n"
                  f"  for key, value in {augment!r}.items():\n"
                  f"    c.augment[key] = value\n  return c\n")
  return str(path.resolve())


def by_path(predictions: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(paths, labels, probabilities) of prediction records, sorted by path."""
  rows = sorted(predictions, key=lambda r: r["path"])
  return ([r["path"] for r in rows], np.array([r["label"] for r in rows]),
          np.array([r["probs"] for r in rows]))


def paired_difference(labels, probs_a, probs_b, rounds=2000, seed=0) -> dict:
  """Accuracy and macro-F1 of b minus a on the same images, with a paired bootstrap 95 %
  interval (jaxmed.evaluation.metrics.paired_bootstrap_ci)."""
  from jaxmed.evaluation.metrics import paired_bootstrap_ci
  k = probs_a.shape[1]
  return {m: paired_bootstrap_ci(labels, probs_a.argmax(1), probs_b.argmax(1), k, m, rounds, seed)
          for m in ("accuracy", "macro_f1")}


def tta_oof(cv_dir: Path, folds: int, tta: int) -> tuple[list[str], np.ndarray, np.ndarray]:
  from jaxmed.evaluation.evaluator import evaluate_workdir
  rows = []
  for f in range(folds):
    result, _ = evaluate_workdir(cv_dir / f"fold-{f}", split="val", tta=tta, name=f"val_tta{tta}")
    rows += result["predictions"]
  return by_path(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
  parser.add_argument("--variants", default="base,smooth,aug_none,aug_strong,aug_geometric,"
                      "longer,aug_none_longer,size96")
  parser.add_argument("--folds", type=int, default=5)
  parser.add_argument("--holdout", type=float, default=0.15)
  parser.add_argument("--tta", type=int, default=4)
  parser.add_argument("--workdir", default="runs/cv_defaults")
  parser.add_argument("--json")
  args = parser.parse_args()
  shared = Path(os.environ.get("JAXMED_SHARED", REPO.parent / "shared"))
  spec = DATASETS[args.dataset]
  root = shared / spec["data"]
  work = Path(args.workdir).resolve() / args.dataset
  work.mkdir(parents=True, exist_ok=True)
  manifest = work / "holdout.jsonl"
  if not manifest.exists():  # a patient-/cluster-grouped hold-out: the fold ensemble's test
    subprocess.run([sys.executable, "-m", "jaxmed.split", str(root), "--out", str(manifest),
                    "--remix", f"{1 - args.holdout - 0.1:.2f},0.10,{args.holdout:.2f}",
                    "--seed", "0", *spec["split_args"]], check=True)
  table = variants(spec["preset"])
  records, base = [], None
  for name in args.variants.split(","):
    cv_dir = work / name
    overrides, augment = table[name]
    command = [sys.executable, "-m", "jaxmed.crossval", "--config",
               config_for(spec, name, augment, work),
               "--folds", str(args.folds), "--workdir", str(cv_dir), f"--config.data.root={root}",
               f"--config.data.manifest={manifest}", *spec["cv_args"], *QUICK, *overrides]
    t0 = time.time()
    done_before = (cv_dir / "cv_summary.json").exists()
    subprocess.run(command, check=True, cwd=REPO)
    seconds = None if done_before else time.time() - t0
    summary = json.loads((cv_dir / "cv_summary.json").read_text())
    paths, labels, probs = by_path(summary["oof_predictions"])
    tta_paths, tta_labels, tta_probs = tta_oof(cv_dir, args.folds, args.tta)
    assert tta_paths == paths and (tta_labels == labels).all()
    record = {"dataset": args.dataset, "variant": name, "overrides": QUICK + overrides,
              "augment_added": augment,
              "cv_seconds": seconds, "oof": summary["oof"], "folds": summary["folds"],
              "ensemble_test": summary.get("ensemble_test"),
              "oof_tta": paired_difference(labels, probs, tta_probs),
              "mean_fold_test_accuracy": float(np.mean([f["test"]["accuracy"]
                                                         for f in summary["folds"]])),
              "mean_fold_test_macro_f1": float(np.mean([f["test"]["macro_f1"]
                                                         for f in summary["folds"]]))}
    if base is None:
      base = (paths, labels, probs)
    else:
      assert base[0] == paths, "variants must share the folds' images"
      record["vs_base"] = paired_difference(labels, base[2], probs)
    records.append(record)
    print(row(record), flush=True)
    if args.json:
      Path(args.json).write_text(json.dumps({
          "date": datetime.date.today().isoformat(), "cpu": cpu_model(), "command": sys.argv,
          "records": records}, indent=1))


def markdown(paths: list[str]) -> str:
  """The records of one or more --json files as one markdown table (RESULTS.md)."""
  lines = ["| dataset / variant | OOF accuracy [95 %] | OOF macro-F1 [95 %] | vs base: accuracy, "
           "macro-F1 (paired 95 %) | TTA x4 vs none: accuracy, macro-F1 | hold-out: mean fold / "
           "fold ensemble (acc, F1) | s |", "|---|---|---|---|---|---|---|"]
  seen = set()
  for path in paths:
    for r in json.loads(Path(path).read_text())["records"]:
      if (r["dataset"], r["variant"]) in seen:
        continue
      seen.add((r["dataset"], r["variant"]))
      o, e, t, vs = r["oof"], r["ensemble_test"], r["oof_tta"], r.get("vs_base")

      def span(d):
        return f"{d['diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
      lines.append(
          f"| {r['dataset']} / {r['variant']} | {o['accuracy']:.4f} "
          f"[{o['ci95']['accuracy'][0]:.4f}, "
          f"{o['ci95']['accuracy'][1]:.4f}] | {o['macro_f1']:.4f} [{o['ci95']['macro_f1'][0]:.4f}, "
          f"{o['ci95']['macro_f1'][1]:.4f}] | "
          + (f"{span(vs['accuracy'])}, {span(vs['macro_f1'])}" if vs else "(reference)")
          + f" | {span(t['accuracy'])}, {span(t['macro_f1'])} | "
          f"{r['mean_fold_test_accuracy']:.4f}, {r['mean_fold_test_macro_f1']:.4f} / "
          f"{e['accuracy']:.4f}, {e['macro_f1']:.4f} | {r['cv_seconds'] or 0:.0f} |")
  return "\n".join(lines)


def row(r: dict) -> str:
  o, e = r["oof"], r["ensemble_test"] or {}
  vs = r.get("vs_base")
  diff = (f"  vs base acc {vs['accuracy']['diff']:+.4f} [{vs['accuracy']['ci95'][0]:+.4f}, "
          f"{vs['accuracy']['ci95'][1]:+.4f}] F1 {vs['macro_f1']['diff']:+.4f} "
          f"[{vs['macro_f1']['ci95'][0]:+.4f}, {vs['macro_f1']['ci95'][1]:+.4f}]" if vs else "")
  t = r["oof_tta"]
  return (f"{r['dataset']}/{r['variant']}: OOF acc {o['accuracy']:.4f} F1 {o['macro_f1']:.4f}"
          f" | TTA {t['accuracy']['diff']:+.4f}/{t['macro_f1']['diff']:+.4f}"
          f" | hold-out single {r['mean_fold_test_accuracy']:.4f}"
          f"/{r['mean_fold_test_macro_f1']:.4f}"
          f" ensemble {e.get('accuracy', float('nan')):.4f}/{e.get('macro_f1', float('nan')):.4f}"
          f" | {r['cv_seconds'] or 0:.0f} s{diff}")


if __name__ == "__main__":
  if sys.argv[1:2] == ["--table"]:  # python benchmarks/cv_defaults.py --table A.json [B.json ...]
    print(markdown(sys.argv[2:]))
  else:
    main()
