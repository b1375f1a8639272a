"""jaxmed.export bundles and jaxmed.predict over files, folders, archives and bad inputs."""

import json
import zipfile

import numpy as np
import pytest

from conftest import trained_workdir
from jaxmed.data.load import load_split
from jaxmed.evaluation import inference

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return trained_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def test_images(workdir):
  root = json.loads((workdir / "config.json").read_text())["data"]["root"]
  from pathlib import Path
  return sorted(Path(root, "test").rglob("*.png"))


@pytest.fixture(scope="module")
def bundle(workdir, tmp_path_factory):
  from jaxmed import export
  path = tmp_path_factory.mktemp("bundle") / "model.jaxmed"
  assert export.main(["--workdir", str(workdir), "--out", str(path)]) == 0
  return path


def test_bundle_predicts_what_the_workdir_predicts(workdir, bundle, test_images):
  import jaxmed.predict as predict
  from jaxmed.evaluation.bundle import load_bundle, read_header
  header, _ = read_header(bundle)
  assert header["classes"] == ["a", "b", "c"] and header["image_size"] == 32
  assert header["model"]["arch"] == "lenet" and header["model"]["preprocessing"] == "unit"
  assert header["model"]["head"] == {"pooling": "avg", "hidden": [16], "dropout": 0.2}
  from_workdir = inference.predict_files(inference.load_predictor(workdir=workdir), test_images)
  from_bundle = inference.predict_files(load_bundle(bundle), test_images)
  assert len(from_workdir) == len(from_bundle) == 12
  for a, b in zip(from_workdir, from_bundle):
    assert a["path"] == b["path"] and a["predicted"] == b["predicted"]
    assert np.allclose(list(a["probs"].values()), list(b["probs"].values()), atol=1e-6)
  # ... and those are the evaluation's predictions for the same files
  import jaxmed.evaluate as evaluate
  from jaxmed.evaluation.trained_run import load_run
  run = load_run(workdir)
  split = load_split(run)
  expected = dict(zip(split.paths, run.predict_fn()(run.variables, split.images)))
  for r in from_bundle:
    assert np.allclose(list(r["probs"].values()), expected[str(r["path"])], atol=1e-5)


def test_export_refuses_to_overwrite_without_force(workdir, bundle, capsys):
  from jaxmed import export
  before = bundle.read_bytes()
  assert export.main(["--workdir", str(workdir), "--out", str(bundle)]) == 2
  assert "--force" in capsys.readouterr().err and bundle.read_bytes() == before
  assert export.main(["--workdir", str(workdir), "--out", str(bundle), "--force"]) == 0
  assert bundle.read_bytes() == before  # same run, same bytes


def test_damaged_or_foreign_bundles_are_refused(bundle, tmp_path):
  from jaxmed.evaluation.bundle import load_bundle
  data = bytearray(bundle.read_bytes())
  data[-10] ^= 0xFF  # a bit flip in the parameters
  (tmp_path / "bad.jaxmed").write_bytes(bytes(data))
  with pytest.raises(ValueError, match="sha256"):
    load_bundle(tmp_path / "bad.jaxmed")
  (tmp_path / "other.jaxmed").write_bytes(b"\x80\x04\x95 a pickle, say")
  with pytest.raises(ValueError, match="not a jaxmed bundle"):
    load_bundle(tmp_path / "other.jaxmed")


def test_predict_reports_bad_files_and_goes_on(bundle, test_images, tmp_path, capsys):
  import jaxmed.predict as predict
  (tmp_path / "junk.png").write_text("not an image")
  (tmp_path / "empty.jpg").write_bytes(b"")
  archive = tmp_path / "two.zip"
  with zipfile.ZipFile(archive, "w") as z:
    z.write(test_images[0], "x/first.png")
    z.write(test_images[-1], "x/last.png")
    z.writestr("x/broken.png", b"\x89PNG broken")
  folder = test_images[0].parent  # 4 images of class a
  args = ["--bundle", str(bundle), str(test_images[5]), str(tmp_path / "junk.png"),
          str(tmp_path / "empty.jpg"), str(tmp_path / "missing.png"), str(archive), str(folder),
          "--format", "json", "--gradcam", str(tmp_path / "cams")]
  assert predict.main(args) == 1  # some files failed, the others were classified
  records = json.loads(capsys.readouterr().out)
  ok = [r for r in records if r["status"] == "ok"]
  bad = {r["path"].rsplit("/", 1)[-1]: r["error"] for r in records if r["status"] == "error"}
  assert len(ok) == 1 + 2 + 4 and set(bad) == {"junk.png", "empty.jpg", "missing.png", "broken.png"}
  assert "0 bytes" in bad["empty.jpg"] and "no such file" in bad["missing.png"]
  assert records[0]["path"] == str(test_images[5])  # input order kept
  for r in ok:
    assert set(r["probs"]) == {"a", "b", "c"} and sum(r["probs"].values()) == pytest.approx(1, abs=1e-4)
    assert r["predicted"] == max(r["probs"], key=r["probs"].get)
  assert len(list((tmp_path / "cams").glob("*.png"))) == len(ok)
  assert predict.main(["--bundle", str(bundle), str(test_images[0]), "--format", "csv"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "path,status,predicted,confidence,p_a,p_b,p_c,error" and len(lines) == 2
  assert predict.main(["--workdir", str(tmp_path), str(test_images[0])]) == 2  # not a run
