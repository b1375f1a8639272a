"""A trained model as one self-describing file (no pickle anywhere): read by predict and by
`jaxmed.predict(..., bundle=...)` without the workdir. Layout:

  8 bytes  magic b"JAXMEDB1"
  8 bytes  header length, little-endian uint64
  header   UTF-8 JSON: format version, model config (arch, alpha, dtype, head), preprocessing,
           image size, class names, the parameters' sha256, where they came from, and the
           decision settings (temperature, thresholds: jaxmed/evaluation/decision.py)
  rest     flax.serialization msgpack of {'params', 'batch_stats'} (plain arrays and dicts)
"""

import dataclasses
import json
import os
import struct
from pathlib import Path

from jaxmed.evaluation.decision import read_decision

MAGIC = b"JAXMEDB1"
FORMAT_VERSION = 1


@dataclasses.dataclass
class Bundle:
  """What prediction needs; the same fields as trained_run.LoadedRun that predict uses."""
  header: dict
  classes: list[str]
  model: object
  variables: dict          # the (first) model's {'params', 'batch_stats'}
  image_size: int
  members: list | None = None  # a fold ensemble's variables, one per fold (predict averages)

  def predict_fn(self):
    """jit(variables, uint8 images) -> probabilities."""
    from jaxmed.evaluation.predictions import softmax_fn
    return softmax_fn(self.model)


def model_record(config_model, preprocessing: str) -> dict:
  head = config_model.head
  return {"arch": config_model.arch, "alpha": float(config_model.get("alpha", 1.0)),
          "dtype": config_model.get("dtype", "float32"),
          "head": {"pooling": head.pooling, "hidden": [int(h) for h in head.hidden],
                   "dropout": float(head.dropout)},
          "preprocessing": preprocessing}


def bundle_bytes(run, source: str = "", members: list | None = None) -> bytes:
  """The bundle of a LoadedRun as bytes; with `members` (LoadedRuns of one architecture and class
  list, e.g. the folds of a cross-validation) a fold ensemble whose probabilities predict
  averages, stored as {'members': [variables, ...]}."""
  import jax
  import numpy as np
  from flax import serialization
  from jaxmed.runtime import run_info
  runs = members or [run]
  record = model_record(run.config.model, run.model.preprocessing)
  for other in runs[1:]:
    if (model_record(other.config.model, other.model.preprocessing) != record
        or list(other.classes) != list(run.classes) or other.image_size != run.image_size):
      raise ValueError(f"{other.workdir}: an ensemble's members must share architecture, image "
                       f"size and classes with {run.workdir}")
  variables = [jax.tree.map(np.asarray, {"params": r.variables["params"],
                                         "batch_stats": r.variables.get("batch_stats", {})})
               for r in runs]
  payload = variables[0] if len(runs) == 1 else {"members": variables}
  header = {"format": "jaxmed-bundle", "version": FORMAT_VERSION, "jaxmed": run_info.JAXMED_VERSION,
            "model": record, "image_size": int(run.image_size), "classes": list(run.classes),
            "params_sha256": run_info.params_sha256(payload), "source": source,
            # temperature and thresholds were fitted for one model, not for an average
            "decision": read_decision(run.workdir) if len(runs) == 1 else None}
  if len(runs) > 1:
    header["ensemble"] = len(runs)
  head = json.dumps(header, indent=1).encode()
  return MAGIC + struct.pack("<Q", len(head)) + head + serialization.msgpack_serialize(payload)


def write_bundle(run, out: str | Path, force: bool = False, source: str = "",
                 members: list | None = None) -> Path:
  out = Path(out)
  if out.exists() and not force:
    raise FileExistsError(f"{out} exists; pass --force to overwrite it")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
  tmp.write_bytes(bundle_bytes(run, source, members))
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
  payload = serialization.msgpack_restore(Path(path).read_bytes()[offset:])
  if run_info.params_sha256(payload) != header["params_sha256"]:
    raise ValueError(f"{path}: parameters do not match the header's sha256 (file damaged?)")
  members = payload["members"] if header.get("ensemble") else [payload]
  for variables in members:
    variables.setdefault("batch_stats", {})
  m = header["model"]
  config = ml_collections.ConfigDict({"arch": m["arch"], "alpha": m["alpha"], "dtype": m["dtype"],
                                      "head": {"pooling": m["head"]["pooling"],
                                               "hidden": tuple(m["head"]["hidden"]),
                                               "dropout": m["head"]["dropout"]}})
  model = create_model(config, len(header["classes"])).clone(preprocessing=m["preprocessing"])
  return Bundle(header, header["classes"], model, members[0], header["image_size"],
                members if len(members) > 1 else None)
