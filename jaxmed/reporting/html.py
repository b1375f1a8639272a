"""One self-contained HTML report of a finished run: DIR/report/index.html (written by every
training run at its end, and by `python -m jaxmed.html_report` for older workdirs).

Sections: configuration, dataset (summary.json's data record; DIR/doctor.json's findings when
present), training curves per phase with the learning rate, test metrics, confusion matrix
(counts and row-normalised), one-vs-rest ROC curves, misclassified test images, augmentation
preview and Grad-CAM overlays. Every image is embedded as a base64 PNG data URI; the file
references nothing outside itself.
"""

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from jaxmed.reporting import plots as report

SECTIONS = {"config": "Run configuration", "dataset": "Dataset", "curves": "Training curves",
            "metrics": "Test metrics", "confusion": "Confusion matrix", "roc": "ROC curves",
            "calibration": "Calibration", "misclassified": "Misclassified images", "augmentation": "Augmentation preview",
            "gradcam": "Grad-CAM"}
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;font-size:.8em;text-align:center}img.plot{max-width:100%}.note{color:#666}
figcaption{max-width:260px;word-break:break-all}
nav a{margin-right:1em}.pair{display:flex;gap:1%}.pair img{max-width:49.5%;height:auto}"""


# ------------------------------------------------------------------------------- helpers
def png_uri(data: bytes) -> str:
  return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def array_png(image: np.ndarray, min_side: int = 112) -> bytes:
  from PIL import Image
  scale = max(1, int(np.ceil(min_side / image.shape[0])))
  im = Image.fromarray(image.astype(np.uint8))
  im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
  buffer = io.BytesIO()
  im.save(buffer, format="PNG")
  return buffer.getvalue()


def figure_png(fig) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  return buffer.getvalue()


def plot_bytes(plot, *args, **kwargs) -> bytes:
  """PNG bytes of a jaxmed.reporting.plots plot (they write files) without touching DIR/report."""
  import tempfile
  with tempfile.TemporaryDirectory() as tmp:
    return plot(*args, out_png=Path(tmp, "plot.png"), **kwargs).read_bytes()


def img(data: bytes, alt: str, cls: str = "plot") -> str:
  return f'<img class="{cls}" alt="{html.escape(alt)}" src="{png_uri(data)}">'


def table(header, rows, left: int = 1) -> str:
  cell = lambda tag, i, v: f'<{tag}{" class=l" if i < left else ""}>{html.escape(str(v))}</{tag}>'
  out = ["<table><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr>"]
  out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows]
  return "".join(out) + "</table>"


def _flat(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _flat(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", json.dumps(v)


def roc_points(scores: np.ndarray, positive: np.ndarray):
  """(false positive rate, true positive rate) at every distinct threshold, from (0, 0)."""
  order = np.argsort(-scores, kind="mergesort")
  s, y = scores[order], positive[order].astype(float)
  last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # end of each run of ties
  tp, fp = np.cumsum(y)[last], np.cumsum(1 - y)[last]
  return np.r_[0, fp / max(fp[-1], 1)], np.r_[0, tp / max(tp[-1], 1)]


# ------------------------------------------------------------------------------ sections
KEY_SETTINGS = ("model.arch", "model.weights", "model.alpha", "model.head.hidden", "data.root",
                "data.image_size", "train.batch_size", "frozen.epochs", "frozen.learning_rate",
                "finetune.epochs", "finetune.learning_rate", "finetune.unfreeze", "augment.preset",
                "train.evaluate", "seed")


def config_section(config, summary: dict, workdir: Path) -> str:
  flat = dict(_flat(config.to_dict()))
  timings = summary.get("timings", {})
  rows = [(k, flat[k]) for k in KEY_SETTINGS if k in flat]
  rows += [("parameters sha256", summary.get("final_params_sha256", "")[:16] + "..."),
           ("train time", f"{timings.get('train_s', 0):.1f} s"),
           ("jax", summary.get("versions", {}).get("jax")),
           ("devices", ", ".join(summary.get("machine", {}).get("devices", [])))]
  return (f"<p>Workdir <code>{html.escape(str(workdir.resolve()))}</code></p>"
          + table(["setting", "value"], rows, 2)
          + "<details><summary>Full configuration (config.json)</summary>"
          + table(["key", "value"], list(flat.items()), 2) + "</details>")


def dataset_section(summary: dict, workdir: Path) -> str:
  data, classes = summary.get("data", {}), summary["classes"]
  parts = [table(["field", "value"], [(k, data.get(k)) for k in ("root", "source", "layout", "synthetic")])]
  counts = data.get("counts", {})
  parts.append(f"<p>Validation split: {html.escape(validation_text(data.get('validation')))}</p>")
  parts.append("<h3>Images per split and class</h3>" + table(
      ["split"] + classes + ["total"], [[s] + c + [sum(c)] for s, c in counts.items()]))
  for key, label in (("skipped_files", "Unreadable files skipped"), ("ignored", "Ignored items")):
    items = data.get(key) or []
    parts.append(f"<p>{label}: {len(items)}</p>" + ("<ul>" + "".join(
        f"<li>{html.escape(str(x))}</li>" for x in items[:20]) + "</ul>" if items else ""))
  doctor_path = workdir / "doctor.json"
  if doctor_path.exists():
    doctor = json.loads(doctor_path.read_text())
    advice = doctor.get("advice") or ["nothing to fix"]
    parts.append("<h3>Dataset doctor findings</h3><ul>"
                 + "".join(f"<li>{html.escape(a)}</li>" for a in advice) + "</ul>")
    found = doctor.get("copies")
    if found:
      parts.append("<h3>Copy clusters</h3>" + table(["finding", "value"], [
          ("clusters (2 or more images)", found["clusters"]),
          ("images in clusters", found["images_in_clusters"]),
          ("largest cluster", found["largest"]),
          ("train images with a copy in train", f"{found['train_fraction_with_copy']:.1%}"),
          *[(f"{s} images with a copy in train", n) for s, n in found["with_copy_in_train"].items()]]))
  else:
    parts.append('<p class="note">No doctor.json in the workdir (python -m jaxmed.doctor PATH '
                 '--json &gt; DIR/doctor.json adds its findings here).</p>')
  return "".join(parts)


def validation_text(how: dict | None) -> str:
  """How the validation split was made, in words (summary.json data.validation)."""
  if not how:
    return "not recorded (a run from before jaxmed recorded it)"
  method = how.get("method")
  if method == "random":
    return f"carved from train at random, stratified by class ({how['val_fraction']:g}, seed {how['seed']})"
  if method == "copies":
    return (f"carved from train by copy cluster ({how['val_fraction']:g}, seed {how['seed']}): "
            f"{how['clusters']} clusters of augmented copies ({how['images_in_clusters']} images, "
            f"the largest {how['largest']}) each kept on one side")
  return str(method)


def curves_section(workdir: Path, history: list[dict]) -> str:
  path = workdir / "report" / "curves.png"
  data = path.read_bytes() if path.exists() else plot_bytes(report.plot_curves, history)
  rows = []
  for phase in dict.fromkeys(r["phase"] for r in history):
    train = [r for r in history if r["phase"] == phase and r["split"] == "train"]
    val = [r for r in history if r["phase"] == phase and r["split"] == "val"]
    rows.append([phase, f"{train[0]['epoch']}-{train[-1]['epoch']}",
                 f"{train[0]['lr']:.3g} -> {train[-1]['lr']:.3g}", f"{train[-1]['loss']:.4f}",
                 f"{val[-1]['loss']:.4f}", f"{max(r['accuracy'] for r in val):.3f}"])
  return img(data, "training curves") + table(
      ["phase", "epochs", "learning rate", "last train loss", "last val loss", "best val accuracy"], rows)


def metrics_section(result: dict, classes: list[str], split_name: str) -> str:
  rows = [[c, *(f"{result['per_class'][c][k]:.3f}" for k in ("precision", "recall", "specificity", "f1")),
           result["per_class"][c]["support"], "n/a" if a is None else f"{a:.3f}"]
          for c, a in zip(classes, result["auc"]["per_class"])]
  macro_auc = "n/a" if result["auc"]["macro"] is None else f"{result['auc']['macro']:.3f}"
  for avg in ("macro", "weighted"):
    v = result["averages"][avg]
    rows.append([f"{avg} avg", *(f"{v[k]:.3f}" for k in ("precision", "recall", "specificity", "f1")),
                 result["num_examples"], macro_auc if avg == "macro" else ""])
  ci = result["ci95"]
  head = (f"<p>{split_name} split, {result['num_examples']} images: accuracy <b>{result['accuracy']:.3f}</b> "
          f"(95% CI {ci['accuracy'][0]:.3f}-{ci['accuracy'][1]:.3f}), "
          f"macro F1 <b>{result['macro_f1']:.3f}</b> "
          f"(95% CI {ci['macro_f1'][0]:.3f}-{ci['macro_f1'][1]:.3f}), balanced accuracy "
          f"{result['balanced_accuracy']:.3f}. Intervals: percentile bootstrap, 1000 resamples.</p>")
  columns = ["class", "precision", "recall (sensitivity)", "specificity", "F1", "support", "ROC-AUC"]
  return head + table(columns, rows)


def _unit_square_png(fig, ax, xlabel: str, ylabel: str, title: str, legend_at: str) -> bytes:
  """The PNG of a plot on [0, 1]^2 with its diagonal (chance for ROC, perfect calibration for a
  reliability diagram) dotted."""
  ax.plot([0, 1], [0, 1], ":", color="0.5")
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.01))
  ax.legend(loc=legend_at, fontsize=8)
  return figure_png(fig)


def roc_figure(probs: np.ndarray, labels: np.ndarray, classes, auc: dict,
               thresholds: dict | None = None) -> bytes:
  """One-vs-rest ROC curves; `thresholds` (class -> threshold, from operating_points.json) are
  marked where they fall on each curve."""
  fig = report._new_figure((6, 5))
  ax = fig.add_subplot()
  for k, name in enumerate(classes):
    if auc["per_class"][k] is None:
      continue
    fpr, tpr = roc_points(probs[:, k], labels == k)
    line, = ax.plot(fpr, tpr, drawstyle="default", label=f"{name} (AUC {auc['per_class'][k]:.3f})")
    if thresholds and name in thresholds:
      called, positive = probs[:, k] >= thresholds[name], labels == k
      ax.plot(np.mean(called[~positive]), np.mean(called[positive]), "*", markersize=13,
              color=line.get_color(), markeredgecolor="k",
              label=f"{name}: threshold {thresholds[name]:.3f} (chosen on validation)")
  return _unit_square_png(fig, ax, "false positive rate (1 - specificity)",
                          "true positive rate (sensitivity)", "One-vs-rest ROC", "lower right")


def reliability_figure(probs: np.ndarray, labels: np.ndarray, temperature: float | None) -> bytes:
  """Top-label reliability diagram (15 equal-width bins), before and after the temperature."""
  from jaxmed.evaluation import calibration
  fig = report._new_figure((6, 5))
  ax = fig.add_subplot()
  curves = [("as trained", probs)]
  if temperature:
    curves.append((f"temperature {temperature:.2f}", calibration.apply_temperature(probs, temperature)))
  for name, p in curves:
    b = calibration.binned(p.max(1), p.argmax(1) == labels)
    ax.plot(b["confidence"], b["outcome"], "o-",
            label=f"{name} (ECE {calibration.expected_calibration_error(p, labels):.3f})")
  return _unit_square_png(fig, ax, "confidence (largest probability)",
                          "accuracy of the bin's images", "Reliability diagram", "upper left")


def calibration_section(probs, labels, workdir: Path) -> tuple[str, np.ndarray, dict | None]:
  """The reliability diagram and scores; the probabilities the stored operating points apply
  to and those thresholds (jaxmed/evaluation/decision.py)."""
  from jaxmed.evaluation import calibration, decision as decision_lib
  decision = decision_lib.read_decision(workdir)
  temperature = decision["temperature"]
  scores = calibration.calibration_metrics(probs, labels)
  text = (f"<p>ECE {scores['ece']:.4f} (15 bins), Brier {scores['brier']:.4f}, NLL "
          f"{scores['nll']:.4f}. ")
  text += (f"A temperature of {temperature:.3f}, fitted on validation "
           f"(<code>python -m jaxmed.evaluate --calibrate</code>), is drawn beside.</p>"
           if temperature else "Fit a temperature on validation with <code>python -m "
           "jaxmed.evaluate --calibrate</code>.</p>")
  return (text + img(reliability_figure(probs, labels, temperature), "reliability diagram"),
          decision_lib.threshold_scores(probs, decision), decision["thresholds"])


def gallery(items) -> str:
  return '<div class="gallery">' + "".join(
      f"<figure>{img(data, caption, 'thumb')}<figcaption>{html.escape(caption)}</figcaption></figure>"
      for data, caption in items) + "</div>"


def augmentation_section(config, train_split, classes) -> str:
  import jax
  from jaxmed.augment import make_augmenter
  augmenter = make_augmenter(config.get("augment")) if config.get("augment") else None
  if augmenter is None:
    return '<p class="note">Augmentation is off in this run: nothing to preview.</p>'
  picks = [int(np.flatnonzero(train_split.labels == k)[0]) for k in range(len(classes))
           if (train_split.labels == k).any()][:4]
  images, n = train_split.images[picks], 6
  onehot = jax.nn.one_hot(np.tile(train_split.labels[picks], n), len(classes))
  out, _ = jax.jit(augmenter)(jax.random.PRNGKey(0), np.tile(images, (n, 1, 1, 1)), onehot)
  out = np.asarray(out).reshape(n, len(picks), *images.shape[1:]).swapaxes(0, 1)
  fig = report._new_figure((1.5 * (n + 1), 1.6 * len(picks)))
  axes = fig.subplots(len(picks), n + 1, squeeze=False)
  for r, i in enumerate(picks):
    for c, image in enumerate([images[r]] + list(out[r])):
      axes[r, c].imshow(np.clip(image, 0, 255).astype(np.uint8))
      title = f"{classes[train_split.labels[i]]} (original)" if c == 0 else "augmented"
      axes[r, c].set_title(title, fontsize=7)
      axes[r, c].axis("off")
  options = {k: v for k, v in dict(config.augment).items()}
  return (f"<p>Options: <code>{html.escape(json.dumps(options, default=str))}</code>. Each row: a "
          f"training image, then {n} draws of the on-device augmentation (seed 0).</p>"
          + img(figure_png(fig), "augmentation preview"))


def gradcam_section(run, split, per_class: int) -> str:
  from jaxmed.evaluation import gradcam
  picks = [i for k in range(len(run.classes)) for i in np.flatnonzero(split.labels == k)[:per_class]]
  if not picks:
    return '<p class="note">No images to explain.</p>'
  images = split.images[picks]
  cams, probs = gradcam.gradcam(run.model, run.variables, images)
  items = []
  for image, cam, p, i in zip(images, cams, probs, picks):
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    pair = np.concatenate([image, gap, gradcam.overlay(image, cam)], 1)
    k = int(np.argmax(p))
    caption = f"true {run.classes[split.labels[i]]}, predicted {run.classes[k]} ({p[k]:.2f})"
    items.append((array_png(pair), caption))
  return ("<p>Grad-CAM on the backbone's last feature map for the predicted class: original | "
          "overlay (red = most weight).</p>" + gallery(items))


def write_html_report(workdir, gradcam_per_class: int = 2, max_errors: int = 24,
                      run=None, splits: dict | None = None) -> Path:
  """Evaluates the run (its best checkpoint, or `run` as given) on its test split (val when there
  is none) and writes
  DIR/report/index.html; returns its path. The end of training passes what it holds: `run`, a
  LoadedRun with the evaluated parameters as host arrays (no checkpoint is read again, which with
  several processes would wait for the others), and `splits`, the decoded splits."""
  import ml_collections
  from jaxmed.data.load import load_data
  from jaxmed.evaluation.evaluator import compute_metrics
  from jaxmed.evaluation.predictions import predict_probs
  from jaxmed.evaluation.trained_run import load_run
  workdir = Path(workdir)
  summary = json.loads((workdir / "summary.json").read_text())
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  history = [json.loads(line) for line in lines if line.strip()]
  if run is None:
    run = load_run(workdir, "best" if config.train.get("evaluate", "best") == "best" else "latest")
  if splits is None or any(s.images is None for s in splits.values()):  # None: streamed
    _, splits, _ = load_data(run.config)
  split_name = "test" if len(splits.get("test", [])) else "val"
  split = splits[split_name]
  probs = predict_probs(run.model, run.variables, split.images)
  result = compute_metrics(probs, split.labels, run.classes)
  classes, out = run.classes, workdir / "report"
  cm = np.asarray(result["confusion_matrix"])
  confusion = "".join(img(plot_bytes(report.plot_confusion_matrix, cm, classes, normalize=norm), name)
                      for name, norm in (("confusion matrix", False), ("row-normalised", True)))
  predicted = probs.argmax(1)
  wrong = sorted(np.flatnonzero(predicted != split.labels), key=lambda i: -probs[i, predicted[i]])
  errors = gallery([(array_png(split.images[i]), f"true {classes[split.labels[i]]} / predicted "
                     f"{classes[predicted[i]]} ({probs[i, predicted[i]]:.2f}) · {Path(split.paths[i]).name}")
                    for i in wrong[:max_errors]]) if wrong else "<p>No misclassified images.</p>"
  calibration_html, point_probs, thresholds = calibration_section(probs, split.labels, workdir)
  body = {
      "config": config_section(config, summary, workdir),
      "dataset": dataset_section(summary, workdir),
      "curves": curves_section(workdir, history),
      "metrics": metrics_section(result, classes, split_name),
      "confusion": f'<p>Rows: true class; columns: predicted class.</p><div class="pair">{confusion}</div>',
      "roc": img(roc_figure(point_probs, split.labels, classes, result["auc"], thresholds),
                 "ROC curves"),
      "calibration": calibration_html,
      "misclassified": f"<p>{len(wrong)} of {len(split)} {split_name} images, most confident mistakes "
                       f"first (showing up to {max_errors}).</p>" + errors,
      "augmentation": augmentation_section(config, splits["train"], classes),
      "gradcam": gradcam_section(run, split, gradcam_per_class),
  }
  title = f"jaxmed run report: {config.model.arch} on {Path(str(config.data.root)).name}"
  nav = "<nav>" + "".join(f'<a href="#{k}">{v}</a>' for k, v in SECTIONS.items()) + "</nav>"
  sections = "".join(f'<section id="{k}"><h2>{SECTIONS[k]}</h2>{body[k]}</section>' for k in SECTIONS)
  page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
          f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{nav}{sections}"
          "</body></html>")
  out.mkdir(parents=True, exist_ok=True)
  (out / "index.html").write_text(page, encoding="utf-8")
  return out / "index.html"
