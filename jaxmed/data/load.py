"""A config's dataset loaded for training, or a split loaded for evaluating a trained run."""

import sys
from pathlib import Path

from jaxmed.data import discover, folder
from jaxmed.runtime.distributed import say


def dataset_spec(data_config) -> str:
  """`data.root` as the loaders take it; the demo's synthetic phantoms are generated on first use."""
  root = data_config.root
  if data_config.get("synthetic", False):
    from jaxmed.data import synthetic
    say("NOTE: this run uses jaxmed's SYNTHETIC phantom dataset (generated, not real patients).")
    root = str(synthetic.ensure_demo_dataset(Path(data_config.root).expanduser()))
  return str(Path(root).expanduser()) if not str(root).startswith("tfds:") else root


def list_data(config):
  """The dataset spec and the listing of its files (no image decoded yet)."""
  spec = dataset_spec(config.data)
  manifest = config.data.get("manifest")
  if manifest is not None and str(manifest).lower() in ("", "none"):  # 'None' from the command line
    manifest = None
  return spec, discover.list_dataset(spec, manifest)


def load_data(config, listed=None, decode: bool = True) -> tuple[list[str], dict[str, folder.Split], dict]:
  """Returns class names, {'train', 'val', 'test'?: Split} and a record of what was loaded.

  `data.root` is a folder (label directories at any depth), an archive, a MedMNIST .npz or
  `tfds:NAME`; `data.manifest` pins files, labels and splits; `data.dedupe='cross_split'` drops
  val/test images whose content also occurs in train; `data.group_by='copies'` carves validation
  by copy cluster; `data.decoded_cache` (default on) reuses an earlier run's decoded images of
  unchanged files. `listed` is list_data()'s result, when the
  caller already has it; with `decode=False` the images stay undecoded (Split.images None), as
  the streamed input path reads them batch by batch while training.
  """
  data = config.data
  spec, listing = listed or list_data(config)
  classes, splits, record = discover.load_dataset(
      spec, data.image_size, seed=config.seed, val_fraction=data.val_fraction,
      dedupe=data.get("dedupe"), listing=listing, decode=decode, group_by=data.get("group_by"),
      decoded_cache=data.get("decoded_cache", True))
  record["synthetic"] = bool(data.get("synthetic", False))
  return classes, splits, record


def load_split(run, data: str | None = None, split: str = "test",
               decoded_cache: bool = True) -> folder.Split:
  """The images to evaluate, labelled with the run's class indices.

  Without `data`: the run's own dataset loaded exactly as training loaded it (same seed, so a
  validation split carved from train is the same). With `data`: that dataset's `split` (or its
  single unsplit pool); its classes are mapped to the run's by name, and a class the model does
  not know is an error. `decoded_cache` keeps its decoded images for the next call, as training
  does (labels are taken from the listing, so a run with another class order reads the same
  entry correctly).
  """
  if data is None:
    _, splits, _ = load_data(run.config)
    if split not in splits:
      raise ValueError(f"the run's dataset has no {split!r} split (it has {', '.join(splits)})")
    return splits[split]
  found = discover.discover(data)
  for line in found.warnings():
    print(line, file=sys.stderr)
  unknown = [c for c in found.classes if c not in run.classes]
  if unknown:
    raise ValueError(f"{data}: classes {unknown} are not among the model's classes {run.classes}")
  if split in found.splits:
    files = found.splits[split]
  elif list(found.splits) == ["train"] and not found.layout.startswith("split folders"):
    files = found.splits["train"]  # class folders only: the whole pool is the evaluation set
  else:
    raise ValueError(f"{data}: no {split!r} split (found {', '.join(found.splits)})")
  index = [run.classes.index(c) for c in found.classes]
  files = folder.FileList(files.paths, [index[label] for label in files.labels])
  decoded, errors = folder.decode_files(files, run.image_size, cache=decoded_cache)
  for message in errors:
    print(f"warning: skipped {message}", file=sys.stderr)
  if not len(decoded):
    raise ValueError(f"{data}: no readable images in the {split!r} split")
  return decoded
