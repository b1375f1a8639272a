"""The wheel, as a user gets it: what it holds, and that the installed package runs from an empty
folder with no checkout in sight (shipped configs by name, the ImageNet label file, the commands).

One wheel and one fresh venv per module. The fresh venv sees the test environment's third-party
packages through a .pth file naming this venv's site-packages: offline, and much faster than
installing jax & co. again. Lines of a .pth file only extend sys.path; .pth files inside the
directories they name are not processed, so this venv's editable jaxmed (a .pth + finder) stays
invisible there and `import jaxmed` can only find the wheel's copy.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # per subprocess; the whole module takes ~2-3 min on 2 cores

# Not copied for the build: version control, environments, build outputs, local runs (a stale
# build/lib is exactly what would leak deleted modules into a wheel built in place). Top-level
# names only, as in .gitignore: a module may well be called workdir.py.
_NOT_SOURCE_TOP = {".git", ".venv", "venv", "build", "dist", "runs", ".whl", "shared"}
_NOT_SOURCE_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")


def _not_source(folder: str, names: list[str]) -> set[str]:
  ignored = set(_NOT_SOURCE_ANYWHERE(folder, names))
  if Path(folder) == REPO:
    ignored |= {n for n in names if n in _NOT_SOURCE_TOP
                or (n.startswith("workdir") and (REPO / n).is_dir())}
  return ignored


def _check(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
  assert result.returncode == 0, (f"{what} exited {result.returncode}\n--- stdout ---\n"
                                  f"{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-6000:]}")
  return result


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
  """A copy of the checkout: building in place would write build/ and *.egg-info into it."""
  src = tmp_path_factory.mktemp("src") / "jaxmed-src"
  shutil.copytree(REPO, src, ignore=_not_source)
  return src


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
  if importlib.util.find_spec("setuptools") is None:
    pytest.fail("setuptools is not installed in the test environment: the offline build needs it "
                "(pip install -e '.[test]'; Python 3.12+ venvs do not bring it)")
  out = tmp_path_factory.mktemp("wheel")
  _check(subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                         "--no-build-isolation", "--no-index", "-w", str(out)],
                        capture_output=True, text=True, timeout=TIMEOUT_S), "pip wheel")
  wheels = list(out.glob("jaxmed-*.whl"))
  assert len(wheels) == 1, wheels
  return wheels[0]


class FreshVenv:
  def __init__(self, root: Path):
    self.root = root
    self.python = root / "bin" / "python"
    self.env = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH")}
    self.env["VIRTUAL_ENV"] = str(root)
    self.env["PATH"] = f"{root / 'bin'}{os.pathsep}{self.env.get('PATH', '')}"

  def run(self, args, cwd: Path, what: str) -> subprocess.CompletedProcess:
    """`python ARGS` in the fresh venv from `cwd`; asserts exit code 0."""
    return _check(subprocess.run([str(self.python), *map(str, args)], cwd=cwd, env=self.env,
                                 capture_output=True, text=True, timeout=TIMEOUT_S), what)


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> FreshVenv:
  fresh = FreshVenv(tmp_path_factory.mktemp("venv") / "env")
  # ensurepip installs pip from the wheel bundled with Python: offline
  _check(subprocess.run([sys.executable, "-m", "venv", str(fresh.root)], capture_output=True,
                        text=True, timeout=TIMEOUT_S), "python -m venv")
  empty = tmp_path_factory.mktemp("empty")
  fresh.run(["-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", wheel], empty,
            "pip install wheel")
  purelib = fresh.run(["-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], empty,
                      "site-packages").stdout.strip()
  ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
  (Path(purelib) / "jaxmed_test_environment.pth").write_text("\n".join(ours) + "\n")
  where = fresh.run(["-c", "import jaxmed, jaxmed.configs; print(jaxmed.__file__); "
                     "print(jaxmed.configs.__file__)"], empty, "import jaxmed").stdout.split()
  for path in where:  # the wheel's copy, not the checkout's through the editable install
    assert Path(path).resolve().is_relative_to(fresh.root.resolve()), where
  return fresh


@pytest.fixture
def empty_dir(tmp_path) -> Path:
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  return cwd


def test_wheel_contents(wheel):
  # Expected from the checkout itself, not the build's copy, so a copy that lost a file fails too.
  names = set(zipfile.ZipFile(wheel).namelist())
  expected = {"jaxmed/configs/demo.py", "jaxmed/weights/imagenet_classes.txt",
              "jaxmed/weights/keras3_layouts.json"}
  expected |= {f"jaxmed/configs/{p.name}" for p in (REPO / "configs").glob("*.py")}
  packages = [p.parent for p in (REPO / "jaxmed").rglob("__init__.py")
              if "__pycache__" not in p.parts]
  for package in packages:  # every package, and every module in it
    expected |= {p.relative_to(REPO).as_posix() for p in package.glob("*.py")}
  missing = sorted(expected - names)
  assert not missing, f"missing from {wheel.name}: {missing}"
  stray = sorted(n for n in names if n.split("/")[0] in ("tests", "benchmarks", "configs"))
  assert not stray, f"not part of the package, yet in the wheel: {stray}"
  outside = sorted(n for n in names
                   if n.split("/")[0] != "jaxmed" and not n.split("/")[0].endswith(".dist-info"))
  assert not outside, f"files outside jaxmed/ in the wheel: {outside}"


def test_installed_commands_import(venv, empty_dir):
  venv.run(["-c", "import jaxmed.train, jaxmed.sweep, jaxmed.evaluate, jaxmed.html_report"],
           empty_dir, "importing the command modules")


def test_installed_demo_config_by_name(venv, empty_dir):
  venv.run(["-m", "jaxmed.train", "--config", "demo", "--workdir", "W1",
            "--config.frozen.epochs=1", "--config.finetune.epochs=0",
            "--config.data.image_size=32", "--config.model.weights=None"],
           empty_dir, "python -m jaxmed.train --config demo")
  assert (empty_dir / "W1" / "summary.json").is_file()


def test_installed_shipped_config_on_a_label_folder(venv, empty_dir, tmp_path):
  root = tmp_path / "tiny-mri"
  rng = np.random.default_rng(0)
  for k, name in enumerate(("glioma", "notumor")):
    (root / name).mkdir(parents=True)
    for i in range(12):
      image = rng.integers(0, 80, (40, 40), dtype=np.uint8)
      image[k * 20:k * 20 + 8] = 230  # a class-dependent bright band
      Image.fromarray(image).save(root / name / f"{name}_{i:02d}.png")
  venv.run(["-m", "jaxmed.train", "--config", "brain_tumor_mri", f"--config.data.root={root}",
            "--config.data.synthetic=False", "--config.data.image_size=32",
            "--config.model.weights=None", "--config.frozen.epochs=1",
            "--config.finetune.epochs=0", "--workdir", "W2"],
           empty_dir, "python -m jaxmed.train --config brain_tumor_mri")
  assert (empty_dir / "W2" / "summary.json").is_file()


def _imagenet_weight_file() -> Path:
  # The path the subprocess's jaxmed will look in: same environment, same cache_dir().
  from jaxmed.runtime.paths import cache_dir
  from jaxmed.weights import sources
  entry = sources.imagenet_file("torchvision/mobilenet_v2", 1.0, include_top=True)
  return cache_dir() / "weights" / entry.filename


def test_installed_classify_sees_a_cat(venv, empty_dir):
  weights = _imagenet_weight_file()
  if not weights.is_file():  # classify would try to download it: no network in tests
    pytest.skip(f"{weights} absent: python -m jaxmed.weights fetch --arch torchvision/mobilenet_v2")
  skimage_data = pytest.importorskip("skimage.data")
  image = empty_dir / "chelsea.png"
  Image.fromarray(skimage_data.chelsea()).save(image)
  out = venv.run(["-m", "jaxmed.weights", "classify", "--arch", "torchvision/mobilenet_v2",
                  "--weights", "imagenet", image.name], empty_dir,
                 "python -m jaxmed.weights classify").stdout
  # "chelsea.png" then "  NN.NN%  label" lines, best first; the label names come from the
  # installed jaxmed/weights/imagenet_classes.txt
  labels = [line.split("%", 1)[1].strip() for line in out.splitlines() if "%" in line]
  assert labels, out
  assert labels[0] in {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}, out
