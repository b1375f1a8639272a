"""Streaming a split through a grain pipeline, for datasets too large to hold decoded on the device:
index order -> read + decode + resize -> batch, with thread (or worker process) prefetch.

Same batches as the device-resident path: both train on `sampling.epoch_batches(seed, epoch,
...)`, and images go through `folder.decode_image`, the function `decode_files` uses, so the
pixels are bit-identical. Starting at step k (a resumed run) slices the order, so the first k
batches are never read.

An unreadable file does not stop training. Its example comes back with `error` set; for training,
`fill_unreadable` gives its slot a readable example of the same batch (shapes stay static, so
nothing recompiles), and evaluation leaves it out. The resident path drops such files while
decoding, before validation is carved from train, so with a broken train file the two paths
split, and then train, differently.

Worker processes (`workers > 0`, grain's mp_prefetch) need absl flags parsed and a `__main__`
guard in the main program, which `python -m jaxmed.train` has. They are spawned anew for every
epoch and every evaluation (seconds each), so they pay off only when an epoch's decoding takes
much longer than that.
"""

import dataclasses
import logging
from typing import Iterator

import grain
import numpy as np

from jaxmed.data import folder, sampling

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StreamOptions:
  threads: int = 4  # decode threads per process (Pillow releases the GIL while decoding)
  workers: int = 0  # > 0: grain worker processes, each decoding with `threads` threads
  prefetch_batches: int = 2  # batches decoded ahead of the one being trained on


class DecodeExample(grain.transforms.Map):
  """Index into the split -> {'image', 'label', 'index', 'error'}. A class, not a closure, so
  grain can pickle it into worker processes."""

  def __init__(self, paths: list[str], labels: np.ndarray, image_size: int):
    self.paths, self.labels, self.image_size = paths, labels, image_size

  def map(self, index):
    index = int(index)
    try:
      image, error = folder.decode_image(self.paths[index], self.image_size), ""
    except ValueError as e:  # decode_image names the file and the reason
      image, error = np.zeros((self.image_size, self.image_size, 3), np.uint8), str(e)
    return {"image": image, "label": np.int32(self.labels[index]), "index": np.int32(index),
            "error": error}


def batches(split: folder.Split, indices: np.ndarray, batch_size: int, image_size: int,
            options: StreamOptions = StreamOptions(),
            drop_remainder: bool = True) -> Iterator[dict]:
  """Batches of DecodeExample outputs for split[indices], in that order: 'image' (B, S, S, 3)
  uint8, 'label' and 'index' (B,) int32, 'error' (B,) str ('' where the file decoded)."""
  if len(indices) == 0:
    return
  dataset = grain.MapDataset.source(np.asarray(indices)).map(
      DecodeExample(split.paths, split.labels, image_size))
  # Prefetch per image, then batch: every thread works on the next batch, and worker processes
  # (which each take every `workers`-th element, interleaved back in order) keep batches intact.
  stream = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=options.threads, prefetch_buffer_size=options.prefetch_batches * batch_size))
  if options.workers:
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=options.workers, per_worker_buffer_size=batch_size))
  iterator = iter(stream.batch(batch_size, drop_remainder=drop_remainder))
  try:
    yield from iterator
  finally:  # worker processes and threads end with the epoch, or when training stops early
    close = getattr(iterator, "close", None)
    if close:
      close()


def train_batches(split: folder.Split, seed: int, epoch: int, batch_size: int, image_size: int,
                  options: StreamOptions = StreamOptions(), balanced: bool = False,
                  start_step: int = 0) -> Iterator[dict]:
  """The epoch's train batches from `start_step` on, unreadable examples filled in."""
  indices = sampling.epoch_batches(seed, epoch, split.labels, batch_size, balanced, start_step)
  for batch in batches(split, indices.ravel(), batch_size, image_size, options):
    yield fill_unreadable(batch)


def fill_unreadable(batch: dict) -> dict:
  """Each unreadable example's slot gets the next readable example of the batch (cyclically);
  'error' still names the files that failed."""
  bad = np.flatnonzero(batch["error"] != "")
  if not len(bad):
    return batch
  good = np.flatnonzero(batch["error"] == "")
  if not len(good):
    raise ValueError(f"no image of a batch could be decoded, e.g. {batch['error'][0]}")
  source = good[np.searchsorted(good, bad) % len(good)]
  batch = dict(batch, image=batch["image"].copy(), label=batch["label"].copy())
  batch["image"][bad], batch["label"][bad] = batch["image"][source], batch["label"][source]
  return batch
