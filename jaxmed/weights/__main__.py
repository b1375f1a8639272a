"""Check converted backbones by eye and by number.

  python -m jaxmed.weights classify --arch torchvision/mobilenet_v2 --weights imagenet IMAGE...
  python -m jaxmed.weights parity --arch mobilenet [--alpha 0.25] [--weights FILE] [--size 224]
  python -m jaxmed.weights fetch --arch torchvision/mobilenet_v2
  python -m jaxmed.weights keras3-layouts   # after adding an architecture; needs keras
"""

import argparse
import json
import pickle
import sys
import tempfile
from pathlib import Path

import jaxmed  # noqa: F401
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxmed.models.preprocess import preprocess
from jaxmed.runtime import cli
from jaxmed.models.registry import build_backbone, get_architecture
from jaxmed.weights import pretrained, sources


def imagenet_labels() -> list[str]:
  text = (Path(__file__).parent / "imagenet_classes.txt").read_text().splitlines()
  return [line for line in text if not line.startswith("#")]


def center_crop(path: str, size: int = 224) -> np.ndarray:
  """Resize the short side to size*256/224, center-crop: the ImageNet evaluation recipe."""
  from jaxmed.data.folder import upright_rgb
  with Image.open(path) as im:
    im = upright_rgb(im)  # EXIF orientation applied, as everywhere images are decoded
    scale = size * 256 / 224 / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


def classify(arch: str, weights: str, images: list[str], alpha: float = 1.0, top_k: int = 5):
  """[(image, [(label, probability), ...best first])]"""
  spec = get_architecture(arch)
  if weights == "imagenet":
    path = sources.fetch(sources.imagenet_file(arch, alpha, include_top=True))
  else:
    path = pretrained.resolve(arch, weights, alpha)
  variables = pretrained.read_variables(arch, path)
  model = build_backbone(arch, alpha, include_top=True)
  apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, preprocess(x, spec.preprocessing))))
  labels = imagenet_labels()
  results = []
  for image in images:
    probs = np.asarray(apply(variables, jnp.asarray(center_crop(image))[None]))[0]
    best = np.argsort(-probs)[:top_k]
    results.append((image, [(labels[i], float(probs[i])) for i in best]))
  return results


def parity(arch: str, alpha: float = 1.0, weights: str | None = None, size=(224, 224),
           include_top: bool = False, seed: int = 0) -> dict:
  """Max |Keras - jaxmed| on one random input, both built from the same weights."""
  from jaxmed.weights import keras_h5, keras_reference
  reference = keras_reference.build(arch, alpha, include_top, size)
  if weights:
    reference.load_weights(weights)
    path = Path(weights)
  else:
    keras_reference.randomize(reference, seed)
    path = Path(tempfile.mkdtemp()) / "random.h5"
    keras_h5.save_keras_h5(path, keras_reference.layer_weights(reference))
  variables = pretrained.read_variables(arch, path)
  model = build_backbone(arch, alpha, include_top=include_top)
  x = np.random.default_rng(seed).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
  ours = jax.jit(model.apply)(variables, jnp.asarray(x))  # one compile beats op-by-op dispatch
  if include_top:
    ours = jax.nn.softmax(ours)
  theirs = np.asarray(reference(x, training=False))
  return {"arch": arch, "alpha": alpha, "size": list(size), "include_top": include_top,
          "weights": str(weights or "random"), "output_shape": list(theirs.shape),
          "max_abs_diff": float(np.max(np.abs(np.asarray(ours) - theirs)))}


@cli.command
def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m jaxmed.weights", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  c = sub.add_parser("classify", help="top-5 ImageNet labels per image")
  c.add_argument("--arch", required=True)
  c.add_argument("--weights", default="imagenet")
  c.add_argument("--alpha", type=float, default=1.0)
  c.add_argument("images", nargs="+")
  p = sub.add_parser("parity", help="max |Keras - jaxmed| as one JSON line")
  p.add_argument("--arch", required=True)
  p.add_argument("--alpha", type=float, default=1.0)
  p.add_argument("--weights", default=None, help="a Keras .h5 file; default random weights")
  p.add_argument("--size", type=int, nargs="+", default=[224])
  p.add_argument("--include-top", action="store_true")
  f = sub.add_parser("fetch", help="download and verify ImageNet weights into the cache")
  f.add_argument("--arch", required=True)
  f.add_argument("--alpha", type=float, default=1.0)
  f.add_argument("--include-top", action="store_true")
  sub.add_parser("keras3-layouts", help="regenerate jaxmed/weights/keras3_layouts.json from Keras")
  args = parser.parse_args(argv)
  try:  # a missing, unsafe or mismatched file, an unknown arch, no network: the user's to fix
    if args.command == "classify":
      for image, top in classify(args.arch, args.weights, args.images, args.alpha):
        print(image)
        for label, prob in top:
          print(f"  {prob:7.2%}  {label}")
    elif args.command == "keras3-layouts":
      from jaxmed.weights import keras_reference
      keras_reference.write_keras3_layouts()
    elif args.command == "parity":
      size = tuple(args.size * 2 if len(args.size) == 1 else args.size[:2])
      print(json.dumps(parity(args.arch, args.alpha, args.weights, size, args.include_top)))
    else:
      print(sources.fetch(sources.imagenet_file(args.arch, args.alpha, args.include_top)))
  except (OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
    raise cli.UserError(str(e).strip("'\"")) from e
  return 0


if __name__ == "__main__":
  sys.exit(main())
