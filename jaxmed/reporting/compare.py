"""Compare finished runs side by side: backbone, input size, parameters, metrics, speed.

Prints a markdown table and writes it to --out (default comparison.md) with the same rows as
JSON beside it (comparison.json). Metrics come from each run's summary.json (its test split, or
val when the run had no test split), or for a cross-validation workdir from its cv_summary.json
(out-of-fold metrics over every training image, with their 95% bootstrap interval); the column
"evaluated on" says which, row by row. images/s is the median training throughput over the
fine-tuning epochs (the frozen phase, without backbone gradients, is faster and not comparable).
"""

import json
import statistics
from pathlib import Path


COLUMNS = (("run", "run"), ("backbone", "backbone"), ("input", "input size"),
           ("parameters", "parameters"), ("split", "evaluated on"), ("accuracy", "accuracy"),
           ("macro_f1", "macro F1"),
           ("auc", "AUC (macro OvR)"), ("train_s", "train time"), ("images_per_s", "images/s"))


def count_parameters(config: dict, num_classes: int) -> int:
  """Trainable parameter count of the run's model, from shapes only (no checkpoint read)."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  from jaxmed.models import create_model
  model = create_model(ml_collections.ConfigDict(config["model"]), num_classes)
  size = config["data"]["image_size"]
  shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, size, size, 3), jnp.uint8)),
                          jax.random.PRNGKey(0))
  return int(sum(x.size for x in jax.tree.leaves(shapes["params"])))


def _speeds(workdir: Path) -> list[float]:
  """Training images/s per epoch: the fine-tuning epochs when there are any."""
  history = []
  if (workdir / "metrics.jsonl").exists():
    history = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l.strip()]
  train = [r for r in history if r.get("split") == "train" and r.get("images_per_s")]
  finetune = [r["images_per_s"] for r in train if r.get("phase") == "finetune"]
  return finetune or [r["images_per_s"] for r in train]


def _crossval_row(workdir: Path) -> dict:
  """A cross-validation workdir as one row: out-of-fold metrics, the folds' summed train time."""
  cv = json.loads((workdir / "cv_summary.json").read_text())
  fold_dirs = [Path(f["workdir"]) for f in cv["folds"]]
  summaries = [json.loads((d / "summary.json").read_text()) for d in fold_dirs]
  row = _row(workdir, summaries[0], cv["oof"], f"oof ({len(fold_dirs)} folds)",
             [s for d in fold_dirs for s in _speeds(d)])
  row["train_s"] = sum(s.get("timings", {}).get("train_s") or 0.0 for s in summaries)
  row["accuracy_ci95"] = cv["oof"].get("ci95", {}).get("accuracy")
  row["macro_f1_ci95"] = cv["oof"].get("ci95", {}).get("macro_f1")
  return row


def run_row(workdir: str | Path) -> dict:
  workdir = Path(workdir)
  if (workdir / "cv_summary.json").exists():
    return _crossval_row(workdir)
  summary_path = workdir / "summary.json"
  if not summary_path.exists():
    raise FileNotFoundError(f"{workdir}: no summary.json or cv_summary.json (not a finished "
                            f"jaxmed run or cross-validation)")
  summary = json.loads(summary_path.read_text())
  split = "test" if "test" in summary else "val"
  return _row(workdir, summary, summary[split], split, _speeds(workdir))


def _row(workdir: Path, summary: dict, result: dict, split: str, speeds: list[float]) -> dict:
  config = summary["config"]
  return {"run": workdir.name, "path": str(workdir.resolve()), "split": split,
          "backbone": config["model"]["arch"] + (f" (alpha {config['model'].get('alpha')})"
                                                 if "mobilenet" in config["model"]["arch"]
                                                 and config["model"].get("alpha", 1.0) != 1.0 else ""),
          "weights": config["model"].get("weights"), "input": config["data"]["image_size"],
          "parameters": count_parameters(config, len(summary["classes"])),
          "accuracy": result["accuracy"], "macro_f1": result["macro_f1"],
          "auc": result.get("auc", {}).get("macro"),
          "train_s": summary.get("timings", {}).get("train_s"),
          "images_per_s": statistics.median(speeds) if speeds else None,
          "num_examples": result.get("num_examples")}


def _cell(key: str, value, row: dict | None = None) -> str:
  if value is None:
    return "n/a"
  if key in ("accuracy", "macro_f1", "auc"):
    interval = (row or {}).get(f"{key}_ci95")
    return f"{value:.4f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
  if key == "parameters":
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value:,}"
  if key == "train_s":
    return f"{value:.1f} s"
  if key == "images_per_s":
    return f"{value:,.0f}"
  if key == "input":
    return f"{value}x{value}"
  return str(value)


def markdown_table(rows: list[dict]) -> str:
  header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
  rule = "|" + "|".join("---" if k in ("run", "backbone") else "---:" for k, _ in COLUMNS) + "|"
  body = ["| " + " | ".join(_cell(k, r[k], r) for k, _ in COLUMNS) + " |" for r in rows]
  cv = [f"{r['run']} ({r['split']})" for r in rows if r["split"].startswith("oof")]
  tail = (f"\n\n(out-of-fold metrics over every training image, 95% bootstrap interval, "
          f"train time summed over the folds, for: {', '.join(cv)})") if cv else ""
  return "\n".join([header, rule] + body) + tail + "\n"


def write_comparison(runs, out: str | Path) -> str:
  """The markdown table of `runs` (workdirs), written to `out` with the rows as JSON beside it."""
  rows = [run_row(r) for r in runs]
  text = markdown_table(rows)
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
  return text
