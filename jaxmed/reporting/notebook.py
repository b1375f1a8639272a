"""What the Python API returns, shown well in a notebook: each object has `_repr_html_` (a table
and the run's plots, inline) and stays a plain dict or list for code that reads its numbers."""

import dataclasses
import html
import json
from pathlib import Path

from jaxmed.reporting.html import img, metrics_section, png_uri, table

REPORT_FILES = {"summary": "summary.json", "metrics": "metrics.jsonl", "config": "config.json",
                "report_html": "report/index.html", "curves": "report/curves.png",
                "confusion_matrix": "report/confusion_matrix.png",
                "confusion_matrix_normalized": "report/confusion_matrix_normalized.png",
                "checkpoints": "checkpoints", "tensorboard": "tensorboard"}


def _display(*objects):
  from IPython.display import display
  display(*objects)


@dataclasses.dataclass
class Run:
  """A finished training run: its summary (as summary.json), its per-epoch history
  (metrics.jsonl) and the paths of what it wrote."""
  workdir: Path
  summary: dict
  history: list[dict]

  @classmethod
  def load(cls, workdir) -> "Run":
    workdir = Path(workdir)
    path = workdir / "summary.json"
    if not path.exists():
      raise FileNotFoundError(f"{workdir}: no summary.json (not a finished jaxmed run)")
    lines = (workdir / "metrics.jsonl").read_text().splitlines() \
        if (workdir / "metrics.jsonl").exists() else []
    return cls(workdir, json.loads(path.read_text()), [json.loads(l) for l in lines if l.strip()])

  @property
  def paths(self) -> dict[str, Path]:
    return {name: self.workdir / rel for name, rel in REPORT_FILES.items()
            if (self.workdir / rel).exists()}

  @property
  def split(self) -> str:
    """The split the final metrics are on: test when the dataset has one, else val."""
    return "test" if "test" in self.summary else "val"

  @property
  def final_params_sha256(self) -> str:
    return self.summary["final_params_sha256"]

  def __repr__(self):
    m = self.summary[self.split]
    return (f"Run({str(self.workdir)!r}, {self.split} accuracy {m['accuracy']:.4f}, "
            f"macro-F1 {m['macro_f1']:.4f})")

  def _repr_html_(self) -> str:
    s, m = self.summary, self.summary[self.split]
    rows = [[c, *(f"{m['per_class'][c][k]:.3f}" for k in ("precision", "recall", "f1")),
             m["per_class"][c]["support"]] for c in s["classes"]]
    auc = m["auc"]["macro"]
    head = (f"<p><b>{html.escape(s['config']['model']['arch'])}</b> · {self.split} split, "
            f"{m['num_examples']} images: accuracy <b>{m['accuracy']:.3f}</b>, macro F1 "
            f"<b>{m['macro_f1']:.3f}</b>, balanced accuracy {m['balanced_accuracy']:.3f}"
            f"{'' if auc is None else f', AUC {auc:.3f}'} · train "
            f"{s['timings']['train_s']:.0f} s · <code>{html.escape(str(self.workdir))}</code></p>")
    plots = "".join(f'<img style="max-width:49%" src="{png_uri(self.paths[k].read_bytes())}">'
                    for k in ("curves", "confusion_matrix") if k in self.paths)
    report = self.paths.get("report_html")
    link = f"<p>Full report: <code>{html.escape(str(report))}</code></p>" if report else ""
    return head + table(["class", "precision", "recall", "F1", "support"], rows) + plots + link

  def show(self):
    """Training curves and confusion matrices, inline."""
    from IPython.display import Image
    _display(*(Image(filename=str(self.paths[k])) for k in
               ("curves", "confusion_matrix", "confusion_matrix_normalized") if k in self.paths))

  def gradcam(self, per_class: int = 1, split: str | None = None):
    """Grad-CAM overlays of `per_class` images per class of a split (default: the final one),
    computed from the best checkpoint, inline."""
    from IPython.display import HTML
    from jaxmed.data.load import load_split
    from jaxmed.evaluation.trained_run import load_run
    from jaxmed.reporting.html import gradcam_section
    model = load_run(self.workdir, "best")
    _display(HTML(gradcam_section(model, load_split(model, None, split or self.split), per_class)))


class EvalResult(dict):
  """`jaxmed.evaluate`'s result (the eval/<name>.json content): a dict, shown as the report."""

  def _repr_html_(self) -> str:
    return (metrics_section(self, self["classes"], self.get("split", "test"))
            + f"<p>Written to <code>{html.escape(str(self.get('path', '')))}</code></p>")


class Predictions(list):
  """`jaxmed.predict`'s records, one per file: a list, shown as a table."""

  def __init__(self, records, classes):
    super().__init__(records)
    self.classes = list(classes)

  def _repr_html_(self) -> str:
    rows = [[r["path"], r.get("predicted", "ERROR"), f"{r['confidence']:.3f}" if "confidence" in r
             else r.get("error", ""), *(f"{r['probs'][c]:.3f}" if "probs" in r else "" for c in self.classes)]
            for r in self]
    cams = "".join(img(Path(r["gradcam"]).read_bytes(), r["path"]) for r in self if r.get("gradcam"))
    return table(["file", "predicted", "confidence"] + self.classes, rows) + cams


class DoctorReport(dict):
  """`jaxmed.doctor`'s findings: a dict (as `python -m jaxmed.doctor --json`); str() is the text
  report, and a notebook shows it with the advice first."""

  def __str__(self):
    from jaxmed.data.doctor import format_report
    return format_report(self)

  def _repr_html_(self) -> str:
    advice = self.get("advice") or ["nothing to fix"]
    return ("<p><b>What to do</b></p><ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in advice)
            + f"</ul><pre>{html.escape(str(self))}</pre>")
