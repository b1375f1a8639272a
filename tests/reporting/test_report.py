"""jaxmed.reporting.plots writes readable PNGs for a two-phase history and awkward class names."""

import numpy as np
import pytest
from PIL import Image

from jaxmed.reporting import plots as report


def _history():
  """Two frozen epochs then three fine-tune epochs; epochs continue across phases."""
  recs = []
  for epoch in range(1, 6):
    phase = "frozen" if epoch <= 2 else "finetune"
    lr = 1e-3 if phase == "frozen" else 1e-4 / epoch
    for split, loss in (("train", 1.0 / epoch), ("val", 1.2 / epoch)):
      recs.append({"epoch": epoch, "phase": phase, "split": split, "loss": loss,
                   "accuracy": 1 - loss / 2, "lr": lr})
  return recs


def _assert_png(path):
  assert path.exists() and path.stat().st_size > 0
  with Image.open(path) as im:
    assert im.format == "PNG"
    im.load()  # decodes fully: catches truncated files
    assert im.size[0] > 100 and im.size[1] > 100
  # atomic write leaves no temp files behind
  assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_phase_spans():
  assert report._phase_spans(_history()) == [("frozen", 1.0, 2.0), ("finetune", 3.0, 5.0)]


def test_plot_curves(tmp_path):
  out = report.plot_curves(_history(), tmp_path / "sub" / "curves.png")
  _assert_png(out)
  # without lr / accuracy, and with an empty history, it still draws something
  slim = [{k: v for k, v in r.items() if k in ("epoch", "phase", "split", "loss")}
          for r in _history()]
  _assert_png(report.plot_curves(slim, tmp_path / "slim.png"))
  _assert_png(report.plot_curves([], tmp_path / "empty.png"))


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion_matrix_awkward_names(tmp_path, normalize):
  names = ["Ödem (leichtgradig)", "β-cell naïve",
           "Nevus with an exceptionally long descriptive histopathology name",
           "no-examples"]
  cm = np.array([[5, 1, 0, 0], [2, 3, 1, 0], [0, 1, 7, 0], [0, 0, 0, 0]])
  out = report.plot_confusion_matrix(cm, names, tmp_path / "cm.png", normalize=normalize)
  _assert_png(out)
  with pytest.raises(ValueError):
    report.plot_confusion_matrix(cm, names[:3], tmp_path / "bad.png")


def test_write_report(tmp_path):
  cm = np.array([[4, 1], [0, 5]])
  paths = report.write_report(tmp_path, _history(), cm, ["benign", "malignant"])
  assert [p.name for p in paths] == ["curves.png", "confusion_matrix.png",
                                     "confusion_matrix_normalized.png"]
  for p in paths:
    assert p.parent == tmp_path / "report"
    _assert_png(p)
