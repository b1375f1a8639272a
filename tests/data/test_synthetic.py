"""Tests for the synthetic phantom dataset: layout, determinism, safety and difficulty."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from jaxmed.data import synthetic
from jaxmed.data.synthetic import CLASSES, MARKER, generate_phantoms

sklearn = pytest.importorskip("sklearn")
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402


def _hashes(root):
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root, split):
  xs, ys = [], []
  for k, c in enumerate(CLASSES):
    for f in sorted((root / split / c).glob("*.png")):
      xs.append(np.asarray(Image.open(f), dtype=np.float32))
      ys.append(k)
  return np.stack(xs), np.array(ys)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Enough images for the separability checks (64 px, 100 train / 50 test per class)."""
  root = generate_phantoms(tmp_path_factory.mktemp("sep") / "ds", train_per_class=100,
                           test_per_class=50, seed=0)
  return _load(root, "train") + _load(root, "test")


def test_layout_and_format(tmp_path):
  root = generate_phantoms(tmp_path / "ds", image_size=48, train_per_class=3, test_per_class=2)
  for split, n in (("train", 3), ("test", 2)):
    assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASSES)
    for c in CLASSES:
      files = sorted((root / split / c).glob("*.png"))
      assert [f.name for f in files] == [f"{c}_{i:05d}.png" for i in range(n)]
      with Image.open(files[0]) as im:
        assert im.mode == "L" and im.size == (48, 48)
  assert json.loads((root / MARKER).read_text())["train_per_class"] == 3
  assert not [p for p in tmp_path.iterdir() if p.name != "ds"]  # temp dir was renamed away


def test_deterministic_and_seed_dependent(tmp_path):
  kw = dict(image_size=64, train_per_class=4, test_per_class=2)
  a = _hashes(generate_phantoms(tmp_path / "a", seed=3, **kw))
  b = _hashes(generate_phantoms(tmp_path / "b", seed=3, **kw))
  c = _hashes(generate_phantoms(tmp_path / "c", seed=4, **kw))
  assert a == b
  pngs = [k for k in a if k.endswith(".png")]
  assert len(pngs) == 24 and all(a[k] != c[k] for k in pngs)


def test_reuse_replace_and_refuse(tmp_path):
  root = generate_phantoms(tmp_path / "ds", train_per_class=2, test_per_class=1)
  before = _hashes(root)
  sentinel = root / "train" / "keep.txt"  # survives only if the call really returns early
  sentinel.write_text("x")
  assert generate_phantoms(root, train_per_class=2, test_per_class=1) == root
  assert sentinel.exists()
  generate_phantoms(root, train_per_class=1, test_per_class=1)  # stale jaxmed dataset: replaced
  assert not sentinel.exists() and len(list(root.rglob("*.png"))) == 8 and _hashes(root) != before

  foreign = tmp_path / "mine"
  (foreign / "train").mkdir(parents=True)
  (foreign / "train" / "scan.png").write_bytes(b"precious")
  with pytest.raises(FileExistsError):
    generate_phantoms(foreign, train_per_class=1, test_per_class=1)
  assert (foreign / "train" / "scan.png").read_bytes() == b"precious"


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
  def boom(*a, **k):
    raise RuntimeError("killed")
  monkeypatch.setattr(synthetic, "_phantom", boom)
  with pytest.raises(RuntimeError):
    generate_phantoms(tmp_path / "ds", train_per_class=1, test_per_class=1)
  assert list(tmp_path.iterdir()) == []


def test_demo_dataset_size(tmp_path):
  root = synthetic.ensure_demo_dataset(tmp_path / "demo")  # 1000 images
  for split, n in (("train", 200), ("test", 50)):
    assert all(len(list((root / split / c).glob("*.png"))) == n for c in CLASSES)


@pytest.mark.parametrize("stat", ["mean", "std", "min", "max", "median", "p99", "frac200"])
def test_no_single_global_statistic_separates(data, stat):
  xtr, ytr, xte, yte = data
  fns = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "median": np.median,
         "p99": lambda f, axis: np.percentile(f, 99, axis=axis),
         "frac200": lambda f, axis: (f > 200).mean(axis)}
  feat = lambda x: fns[stat](x.reshape(len(x), -1), axis=1)[:, None]
  acc = DecisionTreeClassifier(max_depth=2, random_state=0).fit(feat(xtr), ytr).score(feat(xte), yte)
  assert acc < 0.6, (stat, acc)


def _shrink(x, n=32):
  return np.stack([np.asarray(Image.fromarray(i.astype(np.uint8)).resize((n, n), Image.BILINEAR))
                   for i in x]).reshape(len(x), -1) / 255.0


def test_linear_model_on_pixels_is_not_enough(data):
  xtr, ytr, xte, yte = data
  clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
  acc = clf.fit(_shrink(xtr), ytr).score(_shrink(xte), yte)
  assert acc < 0.9, acc


def _radial_intensity_features(x):
  """Per image: intensity histograms (relative to the brain's median) in rings around the head centre."""
  out = []
  for img in x:
    img = ndimage.gaussian_filter(img, 1.0)
    head = ndimage.binary_fill_holes(img > 0.4 * np.percentile(img, 95))
    ii, jj = np.nonzero(head)
    rows, cols = np.indices(img.shape)
    r = np.hypot((rows - ii.mean()) / ii.std(), (cols - jj.mean()) / jj.std()) / 2.0  # ~1 at scalp
    rel = img / np.median(img[head & (r < 0.6)])
    rings = [head & (r >= lo) & (r < lo + 0.2) for lo in (0.0, 0.2, 0.4, 0.6, 0.8)]
    out.append(np.concatenate([np.histogram(rel[m], bins=10, range=(0, 2.5))[0] / max(m.sum(), 1)
                               for m in rings]))
  return np.array(out)


def test_signal_is_learnable_by_shallow_model(data):
  xtr, ytr, xte, yte = data
  clf = RandomForestClassifier(300, random_state=0, n_jobs=-1)
  acc = clf.fit(_radial_intensity_features(xtr), ytr).score(_radial_intensity_features(xte), yte)
  assert acc >= 0.6, acc
