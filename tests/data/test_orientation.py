"""EXIF orientation: a phone photo of a film is turned upright in every path that decodes it."""

import types

import numpy as np
import pytest
from PIL import Image, ImageOps

from jaxmed.data import discover, doctor, folder, stream
from jaxmed.data.load import load_split
from jaxmed.evaluation import inference, predictions
from conftest import write_label_tree

SIZE = 32  # the decode size equals the file's, so decoding only transposes (no resize blur)


def _exif_jpeg(path, orientation=6):
  """An asymmetric picture (bright block top-left, mid-grey band along the bottom) saved as a
  JPEG whose EXIF says 'rotate 90 degrees clockwise to display'."""
  a = np.full((SIZE, SIZE, 3), 20, np.uint8)
  a[:12, :12] = 240
  a[-8:, :] = 120
  im = Image.fromarray(a)
  exif = im.getexif()
  exif[folder.EXIF_ORIENTATION] = orientation
  path.parent.mkdir(parents=True, exist_ok=True)
  im.save(path, quality=95, exif=exif)
  return path


def _upright(path) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _as_stored(path) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


@pytest.fixture
def photo(tmp_path):
  """A test-only tree (images/TEST/<class>) holding one EXIF-rotated JPEG among plain PNGs."""
  root = write_label_tree(tmp_path / "ext" / "images", {"TEST": {"a": 2, "b": 2}}, size=SIZE)
  path = _exif_jpeg(root / "TEST" / "a" / "film.jpeg")
  want = _upright(path)
  assert not np.array_equal(want, _as_stored(path))  # the content is asymmetric
  assert want[:12, -12:].mean() > 200 and want[:12, :12].mean() < 150  # block now top-right
  return tmp_path / "ext", path, want


def test_resident_decode_turns_the_photo_upright(photo):
  _, path, want = photo
  assert np.array_equal(folder.decode_image(path, SIZE), want)
  split, errors = folder.decode_files(folder.FileList([path], [0]), SIZE)
  assert not errors and np.array_equal(split.images[0], want)


def test_streamed_pipeline_turns_the_photo_upright(photo):
  _, path, want = photo
  split = folder.Split(None, np.zeros(1, np.int32), [str(path)])
  (batch,) = list(stream.batches(split, np.array([0]), 1, SIZE, drop_remainder=False))
  assert batch["error"][0] == "" and np.array_equal(batch["image"][0], want)


def test_evaluation_of_an_external_folder_turns_the_photo_upright(photo):
  root, path, want = photo
  run = types.SimpleNamespace(classes=["a", "b"], image_size=SIZE)
  split = load_split(run, str(root), "test")
  assert np.array_equal(split.images[split.paths.index(str(path))], want)


def test_predict_turns_the_photo_upright(photo, monkeypatch):
  _, path, want = photo
  seen = []

  def fake_probs(model, variables, images, batch_size=64, **kw):
    seen.append(np.array(images))
    return np.full((len(images), 2), 0.5)

  monkeypatch.setattr(predictions, "predict_probs", fake_probs)
  predictor = types.SimpleNamespace(classes=["a", "b"], image_size=SIZE, model=None, variables=None)
  (record,) = inference.predict_files(predictor, [path])
  assert record["status"] == "ok" and np.array_equal(seen[0][0], want)


def test_doctor_counts_rotated_files(photo):
  root, path, _ = photo
  write_label_tree(root / "images", {"TRAIN": {"a": 3, "b": 3}}, size=SIZE)
  _exif_jpeg(root / "images" / "TRAIN" / "b" / "film2.jpeg", orientation=3)  # 180 degrees
  report = doctor.examine(str(root))
  assert report["exif_orientation"]["rotated_or_flipped"] == 2
  assert str(path) in report["exif_orientation"]["files"]
  assert "EXIF orientation: 2 files" in doctor.format_report(report)
  assert not any("EXIF" in a or "orientation" in a for a in report["advice"])  # handled


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_unparseable_exif_does_not_cost_the_image(tmp_path):
  path = tmp_path / "odd.jpg"
  Image.new("RGB", (SIZE, SIZE), (90, 10, 10)).save(path, exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")
  assert folder.decode_image(path, SIZE).shape == (SIZE, SIZE, 3)


def test_training_load_turns_the_photo_upright(tmp_path):
  root = write_label_tree(tmp_path, {"train": {"a": 3, "b": 3}, "test": {"a": 1, "b": 1}}, size=SIZE)
  path = _exif_jpeg(root / "test" / "a" / "film.jpeg")
  _, splits, _ = discover.load_dataset(str(root), SIZE, seed=0, val_fraction=0.25)
  assert np.array_equal(splits["test"].images[splits["test"].paths.index(str(path))], _upright(path))
