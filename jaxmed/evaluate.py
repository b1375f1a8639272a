"""Evaluate a finished run on its test split, or on another dataset with the same classes.

  python -m jaxmed.evaluate --workdir DIR [--data PATH] [--split test] [--tta N] [--name NAME]

Prints a classification report (per-class precision, recall = sensitivity, specificity, F1,
support; macro and weighted averages), one-vs-rest ROC-AUC, the confusion matrix and 95 %
bootstrap intervals for accuracy and macro F1, and writes them with every prediction to
DIR/eval/<name>.json (name: the split, or the --data folder's name).
"""

import jaxmed.runtime.platform

if __name__ == "__main__":  # first thing: the allocator preload only takes at process start
  jaxmed.runtime.platform.restart_with_fast_allocator()  # (mimalloc; see jaxmed/runtime/platform.py)

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import jaxmed  # noqa: F401  (XLA flags before JAX initialises)
from jaxmed.evaluation import metrics as metrics_lib
from jaxmed.data import discover, folder

MAX_TTA = 8
SHIFT = 2  # pixels moved by the shifted test-time views


# ------------------------------------------------------------------------------------ data
def load_split(run, data: str | None = None, split: str = "test") -> folder.Split:
  """The images to evaluate, labelled with the run's class indices.

  Without `data`: the run's own dataset loaded exactly as training loaded it (same seed, so a
  validation split carved from train is the same). With `data`: that dataset's `split` (or its
  single unsplit pool); its classes are mapped to the run's by name, and a class the model does
  not know is an error.
  """
  if data is None:
    from jaxmed.train import load_data
    _, splits, _ = load_data(run.config)
    if split not in splits:
      raise ValueError(f"the run's dataset has no {split!r} split (it has {', '.join(splits)})")
    return splits[split]
  found = discover.discover(data)
  unknown = [c for c in found.classes if c not in run.classes]
  if unknown:
    raise ValueError(f"{data}: classes {unknown} are not among the model's classes {run.classes}")
  if split in found.splits:
    files = found.splits[split]
  elif list(found.splits) == ["train"] and not found.layout.startswith("split folders"):
    files = found.splits["train"]  # class folders only: the whole pool is the evaluation set
  else:
    raise ValueError(f"{data}: no {split!r} split (found {', '.join(found.splits)})")
  index = [run.classes.index(c) for c in found.classes]
  files = folder.FileList(files.paths, [index[label] for label in files.labels])
  decoded, errors = folder.decode_files(files, run.image_size)
  for message in errors:
    print(f"warning: skipped {message}", file=sys.stderr)
  if not len(decoded):
    raise ValueError(f"{data}: no readable images in the {split!r} split")
  return decoded


# ------------------------------------------------------------------------------ prediction
def tta_views(images: np.ndarray, n: int) -> list[np.ndarray]:
  """The first n of: identity, horizontal flip, then shifts by SHIFT pixels (right, left, down,
  up) and the flipped image shifted right and left. Edges are replicated. Deterministic."""
  if not 1 <= n <= MAX_TTA:
    raise ValueError(f"--tta must be between 1 and {MAX_TTA}, got {n}")
  flipped = images[:, :, ::-1]

  def shift(x, dy, dx):
    p = SHIFT
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    return padded[:, p - dy:p - dy + h, p - dx:p - dx + w]

  views = [lambda: images, lambda: flipped,
           lambda: shift(images, 0, SHIFT), lambda: shift(images, 0, -SHIFT),
           lambda: shift(images, SHIFT, 0), lambda: shift(images, -SHIFT, 0),
           lambda: shift(flipped, 0, SHIFT), lambda: shift(flipped, 0, -SHIFT)]
  return [np.ascontiguousarray(v()) for v in views[:n]]


def predict_probs(model, variables, images: np.ndarray, batch_size: int = 64, tta: int = 1):
  """Class probabilities (N, K) as float64, averaged over `tta` views. Batches are padded to
  one shape so one compiled program serves every batch."""
  import jax
  apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False)))
  total = None
  for view in tta_views(np.asarray(images, np.uint8), tta):
    out = []
    for start in range(0, len(view), batch_size):
      chunk = view[start:start + batch_size]
      padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - len(chunk), 0)])
      out.append(np.asarray(apply(variables, padded), np.float64)[:len(chunk)])
    probs = np.concatenate(out)
    total = probs if total is None else total + probs
  return total / tta


# --------------------------------------------------------------------------------- metrics
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


def evaluate(run, split: folder.Split, tta: int = 1, batch_size: int = 64) -> dict:
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxmed.evaluate", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished jaxmed run")
  parser.add_argument("--data", help="another dataset with the same classes (folder, archive)")
  parser.add_argument("--split", default="test", help="split to evaluate (default test)")
  parser.add_argument("--tta", type=int, default=1, help=f"test-time views to average (1-{MAX_TTA})")
  parser.add_argument("--name", help="output name: DIR/eval/<name>.json")
  parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
  args = parser.parse_args(argv)
  from jaxmed.evaluation.trained_run import load_run
  try:
    run = load_run(args.workdir, args.checkpoint)
    split = load_split(run, args.data, args.split)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  result = evaluate(run, split, args.tta)
  from jaxmed.runtime.run_info import machine
  result.update(split=args.split, data=args.data, checkpoint=args.checkpoint, classes=run.classes,
                machine=machine())
  name = args.name or (Path(args.data.rstrip("/")).name if args.data else args.split)
  out = Path(args.workdir) / "eval" / f"{name}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1))
  print(f"{args.data or args.workdir} [{args.split}], {result['num_examples']} images"
        f"{f', TTA x{args.tta}' if args.tta > 1 else ''}\n")
  print(format_result(result, run.classes))
  print(f"\nwrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
