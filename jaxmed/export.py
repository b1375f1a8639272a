"""Export a trained run as one self-describing file for prediction without the workdir.

  python -m jaxmed.export --workdir DIR --out model.jaxmed [--checkpoint best|latest] [--force]
  python -m jaxmed.predict --bundle model.jaxmed image.png ...

File layout (no pickle anywhere):
  8 bytes  magic b"JAXMEDB1"
  8 bytes  header length, little-endian uint64
  header   UTF-8 JSON: format version, model config (arch, alpha, dtype, head), preprocessing,
           image size, class names, the parameters' sha256, where they came from
  rest     flax.serialization msgpack of {'params', 'batch_stats'} (plain arrays and dicts)
"""

import argparse
import dataclasses
import json
import os
import struct
import sys
from pathlib import Path

import jaxmed  # noqa: F401  (XLA flags before JAX initialises)

MAGIC = b"JAXMEDB1"
FORMAT_VERSION = 1


@dataclasses.dataclass
class Bundle:
  """What prediction needs; the same fields as run_loader.LoadedRun that predict uses."""
  header: dict
  classes: list[str]
  model: object
  variables: dict
  image_size: int

  def predict_fn(self):
    import jax
    return jax.jit(lambda v, x: jax.nn.softmax(self.model.apply(v, x, train=False)))


def model_record(config_model, preprocessing: str) -> dict:
  head = config_model.head
  return {"arch": config_model.arch, "alpha": float(config_model.get("alpha", 1.0)),
          "dtype": config_model.get("dtype", "float32"),
          "head": {"pooling": head.pooling, "hidden": [int(h) for h in head.hidden],
                   "dropout": float(head.dropout)},
          "preprocessing": preprocessing}


def bundle_bytes(run, source: str = "") -> bytes:
  """The bundle of a LoadedRun as bytes."""
  import jax
  import numpy as np
  from flax import serialization
  from jaxmed.runtime import run_info
  variables = jax.tree.map(np.asarray, {"params": run.variables["params"],
                                        "batch_stats": run.variables.get("batch_stats", {})})
  header = {"format": "jaxmed-bundle", "version": FORMAT_VERSION, "jaxmed": jaxmed.__version__,
            "model": model_record(run.config.model, run.model.preprocessing),
            "image_size": int(run.image_size), "classes": list(run.classes),
            "params_sha256": run_info.params_sha256(variables), "source": source}
  head = json.dumps(header, indent=1).encode()
  return MAGIC + struct.pack("<Q", len(head)) + head + serialization.msgpack_serialize(variables)


def write_bundle(run, out: str | Path, force: bool = False, source: str = "") -> Path:
  out = Path(out)
  if out.exists() and not force:
    raise FileExistsError(f"{out} exists; pass --force to overwrite it")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
  tmp.write_bytes(bundle_bytes(run, source))
  tmp.replace(out)
  return out


def read_header(path: str | Path) -> tuple[dict, int]:
  """(header, byte offset of the parameters)."""
  with open(path, "rb") as f:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
      raise ValueError(f"{path}: not a jaxmed bundle (starts with {magic!r})")
    (length,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(length).decode())
  if header.get("version", 0) > FORMAT_VERSION:
    raise ValueError(f"{path}: bundle format {header['version']} is newer than this jaxmed reads")
  return header, len(MAGIC) + 8 + length


def load_bundle(path: str | Path) -> Bundle:
  """Model, variables, classes and image size from a bundle; checks the parameters' sha256."""
  import ml_collections
  from flax import serialization
  from jaxmed.runtime import run_info
  from jaxmed.models import create_model
  header, offset = read_header(path)
  variables = serialization.msgpack_restore(Path(path).read_bytes()[offset:])
  variables.setdefault("batch_stats", {})
  if run_info.params_sha256(variables) != header["params_sha256"]:
    raise ValueError(f"{path}: parameters do not match the header's sha256 (file damaged?)")
  m = header["model"]
  config = ml_collections.ConfigDict({"arch": m["arch"], "alpha": m["alpha"], "dtype": m["dtype"],
                                      "head": {"pooling": m["head"]["pooling"],
                                               "hidden": tuple(m["head"]["hidden"]),
                                               "dropout": m["head"]["dropout"]}})
  model = create_model(config, len(header["classes"])).clone(preprocessing=m["preprocessing"])
  return Bundle(header, header["classes"], model, variables, header["image_size"])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxmed.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True, help="bundle file to write, e.g. model.jaxmed")
  parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
  parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
  args = parser.parse_args(argv)
  from jaxmed.evaluation.trained_run import load_run
  if Path(args.out).exists() and not args.force:  # fail before loading anything
    print(f"error: {args.out} exists; pass --force to overwrite it", file=sys.stderr)
    return 2
  try:
    run = load_run(args.workdir, args.checkpoint)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = write_bundle(run, args.out, force=True,
                     source=f"{Path(args.workdir).resolve()} ({args.checkpoint} checkpoint)")
  header, _ = read_header(out)
  print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {header['model']['arch']}, "
        f"{header['image_size']}px, classes {', '.join(header['classes'])}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
