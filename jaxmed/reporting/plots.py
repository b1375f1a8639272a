"""Training-report figures: learning curves and confusion matrices as PNG files.

matplotlib is imported lazily so importing jaxmed stays cheap. Figures are drawn on
`matplotlib.figure.Figure` with an Agg canvas rather than through pyplot, so no GUI backend is
touched and no global figure state leaks between calls (safe in headless jobs and threads).
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _new_figure(figsize):
  import matplotlib
  if "matplotlib.pyplot" not in sys.modules:
    # Only choose the backend if nobody has set up pyplot yet; we never use pyplot ourselves.
    matplotlib.use("Agg")
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize, dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save_atomic(fig, out_png) -> Path:
  """Writes the PNG to a temp file in the target dir, then os.replace: readers never see half a file."""
  out = Path(out_png)
  out.parent.mkdir(parents=True, exist_ok=True)
  # A plain open() (not mkstemp) so the file gets the usual umask permissions, not 0600.
  tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    with open(tmp, "xb") as f:
      fig.savefig(f, format="png")
    os.replace(tmp, out)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return out


def _num(value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def _phase_spans(history: list[dict]) -> list[tuple[str, float, float]]:
  """(phase, first epoch, last epoch) for each run of consecutive epochs in the same phase."""
  by_epoch = {}
  for rec in history:
    if "epoch" in rec and rec.get("phase") is not None:
      by_epoch.setdefault(_num(rec["epoch"]), str(rec["phase"]))
  spans: list[list] = []
  for epoch in sorted(e for e in by_epoch if not math.isnan(e)):
    phase = by_epoch[epoch]
    if spans and spans[-1][0] == phase:
      spans[-1][2] = epoch
    else:
      spans.append([phase, epoch, epoch])
  return [tuple(s) for s in spans]


def _series(history, split, key):
  pts = sorted((_num(r["epoch"]), _num(r[key])) for r in history
               if r.get("split") == split and key in r and "epoch" in r)
  return [p[0] for p in pts], [p[1] for p in pts]


def _mark_phases(ax, spans, label: bool) -> None:
  for (_, _, prev_end), (_, start, _) in zip(spans, spans[1:]):
    ax.axvline((prev_end + start) / 2, color="0.4", linestyle="--", linewidth=1)
  if label and len(spans) > 1:
    for phase, start, end in spans:
      ax.text((start + end) / 2, 1.01, phase, transform=ax.get_xaxis_transform(),
              ha="center", va="bottom", fontsize=9, color="0.3")


def plot_curves(history: list[dict], out_png) -> Path:
  """Loss / accuracy (train and val) vs epoch, phase boundaries marked, plus lr if logged."""
  metrics = [k for k in ("loss", "accuracy") if any(k in r for r in history)]
  has_lr = any(r.get("lr") is not None for r in history)
  n_axes = max(1, len(metrics) + has_lr)
  fig = _new_figure((7, 2.6 * n_axes + 0.4))
  axes = fig.subplots(n_axes, 1, sharex=True, squeeze=False)[:, 0]
  spans = _phase_spans(history)
  if not history:
    axes[0].text(0.5, 0.5, "no history recorded", ha="center", va="center",
                 transform=axes[0].transAxes)

  for i, (ax, key) in enumerate(zip(axes, metrics)):
    for split, style in (("train", "-o"), ("val", "-s")):
      x, y = _series(history, split, key)
      if x:
        ax.plot(x, y, style, markersize=3, label=split)
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    if ax.has_data():
      ax.legend(loc="best", fontsize=8)
    _mark_phases(ax, spans, label=i == 0)

  if has_lr:
    ax = axes[-1]
    lr_by_epoch = {}
    for r in history:  # one lr per epoch; train and val records carry the same value
      if r.get("lr") is not None and "epoch" in r:
        lr_by_epoch.setdefault(_num(r["epoch"]), _num(r["lr"]))
    x = sorted(lr_by_epoch)
    y = [lr_by_epoch[e] for e in x]
    ax.plot(x, y, "-o", markersize=3, color="tab:green")
    finite = [v for v in y if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 10:
      ax.set_yscale("log")  # warmup/decay schedules span decades
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    _mark_phases(ax, spans, label=not metrics)

  axes[-1].set_xlabel("epoch")
  fig.suptitle("Training curves")
  return _save_atomic(fig, out_png)


def _wrap(name: str, width: int = 22) -> str:
  return "\n".join(textwrap.wrap(str(name), width, break_long_words=True)) or str(name)


def plot_confusion_matrix(cm, class_names: Sequence[str], out_png, normalize: bool = False) -> Path:
  """Heatmap of counts (rows = true class). With normalize=True, cells show the row fraction
  (recall per true class) above the raw count; rows with no examples show 0."""
  cm = np.asarray(cm, dtype=np.int64)
  k = len(class_names)
  if cm.shape != (k, k):
    raise ValueError(f"confusion matrix shape {cm.shape} does not match {k} class names")
  rows = cm.sum(axis=1, keepdims=True)
  frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows != 0)
  values = frac if normalize else cm

  labels = [_wrap(n) for n in class_names]
  label_len = max((len(line) for lbl in labels for line in lbl.split("\n")), default=1)
  cell = 0.5 if k <= 20 else 0.25
  side = min(4 + cell * k + 0.07 * label_len, 30)
  fig = _new_figure((side + 1.2, side))
  ax = fig.add_subplot()
  im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(int(cm.max()), 1))
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)

  if k <= 30:  # beyond that the text is unreadable; the colours still carry the pattern
    threshold = (1 if normalize else max(int(cm.max()), 1)) / 2
    fontsize = 9 if k <= 10 else 7
    for i in range(k):
      for j in range(k):
        text = f"{frac[i, j]:.2f}\n({cm[i, j]})" if normalize else str(cm[i, j])
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                color="white" if values[i, j] > threshold else "black")

  ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor")
  ax.set_yticks(range(k), labels)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else " (counts)"))
  return _save_atomic(fig, out_png)


def write_report(workdir, history: list[dict], cm, class_names: Sequence[str]) -> list[Path]:
  """Writes curves.png, confusion_matrix.png and confusion_matrix_normalized.png under
  workdir/report/ and returns their paths."""
  out = Path(workdir) / "report"
  return [
      plot_curves(history, out / "curves.png"),
      plot_confusion_matrix(cm, class_names, out / "confusion_matrix.png"),
      plot_confusion_matrix(cm, class_names, out / "confusion_matrix_normalized.png",
                            normalize=True),
  ]
