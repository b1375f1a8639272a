"""The HTML report: one self-contained file with every section and embedded images."""

import base64
import html.parser
import json

import numpy as np
import pytest

from conftest import trained_workdir

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class _Collector(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.tags, self.ids, self.sections, self.current = [], set(), {}, None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.tags.append((tag, attrs))
    if "id" in attrs:
      self.ids.add(attrs["id"])
    if tag == "section":
      self.current = attrs["id"]
      self.sections[self.current] = []
    elif tag == "img" and self.current:
      self.sections[self.current].append(attrs["src"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  workdir = trained_workdir(tmp_path_factory)
  doctor = {"advice": ["class c has 8 images: use transfer learning"],
            "copies": {"clusters": 3, "images_in_clusters": 7, "largest": 3,
                       "train_fraction_with_copy": 0.25, "with_copy_in_train": {"test": 2}}}
  (workdir / "doctor.json").write_text(json.dumps(doctor))
  from jaxmed import html_report
  assert html_report.main(["--workdir", str(workdir), "--gradcam-per-class", "1"]) == 0
  path = workdir / "report" / "index.html"
  return path.read_text(encoding="utf-8"), workdir


def test_every_section_is_present_with_its_content(report):
  from jaxmed.reporting.html import SECTIONS
  text, workdir = report
  parser = _Collector()
  parser.feed(text)
  assert set(SECTIONS) <= parser.ids and list(parser.sections) == list(SECTIONS)
  images = parser.sections
  assert len(images["curves"]) == 1 and len(images["confusion"]) == 2 and len(images["roc"]) == 1
  assert len(images["calibration"]) == 1  # the reliability diagram
  assert len(images["augmentation"]) == 1 and len(images["gradcam"]) == 3  # one per class
  summary = json.loads((workdir / "summary.json").read_text())
  wrong = int(np.sum(summary["test"]["confusion_matrix"]) - np.trace(summary["test"]["confusion_matrix"]))
  assert len(images["misclassified"]) == wrong
  assert f"{summary['test']['accuracy']:.3f}" in text  # the headline metric
  assert "class c has 8 images" in text  # doctor findings
  assert "Copy clusters" in text and "<td class=l>test images with a copy in train</td><td>2</td>" in text
  assert summary["data"]["validation"] == {"method": "random", "val_fraction": 0.15, "seed": 0}
  assert "carved from train at random, stratified by class (0.15, seed 0)" in text
  assert "lenet" in text and "Images per split and class" in text
  assert "learning rate" in text and "finetune" in text  # per-phase table with the lr


def test_images_are_embedded_and_nothing_is_fetched(report):
  text, _ = report
  parser = _Collector()
  parser.feed(text)
  sources = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
  assert len(sources) >= 8
  for src in sources:
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
  for tag, attrs in parser.tags:
    assert tag not in ("script", "link", "iframe", "object")
    for key in ("src", "href"):
      value = attrs.get(key) or ""
      assert value.startswith(("data:", "#")) or not value, (tag, key, value[:60])
  assert "http://" not in text and "https://" not in text and "url(" not in text


def test_roc_points_match_sklearn():
  from sklearn.metrics import auc, roc_curve
  from jaxmed.reporting.html import roc_points
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 10, 200) / 10.0  # many ties
  positive = rng.random(200) < 0.3
  fpr, tpr = roc_points(scores, positive)
  sk_fpr, sk_tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
  assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
  assert np.trapezoid(tpr, fpr) == pytest.approx(auc(sk_fpr, sk_tpr))
