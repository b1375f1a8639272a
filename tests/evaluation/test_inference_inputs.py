"""predict's inputs: refused archive members are said on stderr, one line per archive."""

import types
import zipfile

import numpy as np

from jaxmed.evaluation import inference, predictions
from conftest import write_label_tree


def _predictor(monkeypatch):
  monkeypatch.setattr(predictions, "predict_probs",
                      lambda model, variables, images, batch_size=64, **kw: np.full((len(images), 2), 0.5))
  return types.SimpleNamespace(classes=["a", "b"], image_size=16, model=None, variables=None)


def test_predict_warns_about_refused_archive_members(tmp_path, monkeypatch, capsys):
  root = write_label_tree(tmp_path / "d", {"train": {"a": 2, "b": 1}})
  good = sorted(root.rglob("*.png"))
  with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
    for p in good:
      zf.writestr(str(p.relative_to(root)), p.read_bytes())
    zf.writestr("../evil.png", good[0].read_bytes())
    zf.writestr("/etc/abs.png", good[0].read_bytes())
  records = inference.predict_files(_predictor(monkeypatch), [tmp_path / "x.zip", good[0]])
  assert [r["status"] for r in records] == ["ok"] * 4  # the refused ones are not classified
  assert not any("evil" in r["path"] or "abs.png" in r["path"] for r in records)
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1
  assert err[0].startswith(f"warning: refused 2 archive member(s) of {tmp_path / 'x.zip'}: ")
  assert "../evil.png ('..' in path)" in err[0] and "/etc/abs.png (absolute path)" in err[0]


def test_predict_is_quiet_when_nothing_is_refused(tmp_path, monkeypatch, capsys):
  root = write_label_tree(tmp_path / "d", {"train": {"a": 1, "b": 1}})
  with zipfile.ZipFile(tmp_path / "ok.zip", "w") as zf:
    for p in sorted(root.rglob("*.png")):
      zf.writestr(str(p.relative_to(root)), p.read_bytes())
  records = inference.predict_files(_predictor(monkeypatch), [tmp_path / "ok.zip"])
  assert [r["status"] for r in records] == ["ok", "ok"] and capsys.readouterr().err == ""
