"""Input paths and augmentation cost for one train step: device-resident, streamed, fixed.

  python benchmarks/input_path.py [--arch mobilenet_v2] [--size 224] [--batch 32] [--repeats 7]
      [--rows fixed,resident,augmented,stream] [--data DIR]

Times the same compiled jaxmed train step (steps.py's one inner step) fed several ways,
interleaved round-robin so machine noise hits all alike:
  fixed     - the batch index is always 0..B-1 of a B-image array (no gather work to speak of)
  resident  - a random batch gathered by index from an N-image uint8 dataset on the device
  augmented - resident + the `mri` augmentation preset inside the step
  stream    - the batch decoded from image files by jaxmed's grain pipeline (data/stream.py) in
              epoch order and handed to the step (steps.make_batch_train_step)
  decode    - the stream row's pipeline alone, no step: what decoding costs per batch here
Each stream window starts a fresh pipeline at the next batch of the epoch, as an epoch start or a
resume does, so its first-batch latency is timed and no decoding is done outside timed windows.
`--data` is a label-folder dataset (default ../shared/data/chest_xray_pneumonia/train; without it
800 synthetic JPEGs are written to a temporary folder); the resident rows hold its first
`--dataset` images decoded on the device. Prints medians (ms/step) and ratios to the first row;
--json FILE writes them with the load average and date.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import jaxmed  # noqa: F401  (XLA flags before JAX initialises)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmed.training import optim
from jaxmed.augment import make_augmenter
from jaxmed.data import discover, folder, stream
from jaxmed.models import create_model
from jaxmed.training.steps import StepOptions, TrainState, make_batch_train_step, make_train_step

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/chest_xray_pneumonia/train"


def build(arch, size, augment, make_step):
  config = ml_collections.ConfigDict(dict(arch=arch, alpha=1.0, head=dict(
      pooling="avg", hidden=(), dropout=0.0)))
  model = create_model(config, 4)
  params = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, 3), jnp.uint8)))(
      jax.random.PRNGKey(0))
  phase = ml_collections.ConfigDict(dict(epochs=1, learning_rate=1e-4, optimizer="adam"))
  tx, _ = optim.make_optimizer(phase, optim.param_labels(params["params"], arch, 0), 1)
  state = TrainState(jnp.asarray(0), params["params"], params["batch_stats"],
                     tx.init(params["params"]), jax.random.PRNGKey(1))
  aug = make_augmenter({"preset": "mri"}) if augment else None
  return make_step(model, tx, StepOptions(), augment=aug), state


def synthetic_folder(size: int, n: int = 800) -> str:
  """n random-noise JPEGs (the codec's worst case) in two class folders."""
  from PIL import Image
  root = Path(tempfile.mkdtemp(prefix="jaxmed-bench-"))
  rng = np.random.default_rng(0)
  for i in range(n):
    folder_ = root / ("a" if i % 2 else "b")
    folder_.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder_ / f"{i}.jpg")
  return str(root)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--arch", default="mobilenet_v2")
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--dataset", type=int, default=800, help="images held on the device")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--steps", type=int, default=3, help="steps per timed window")
  parser.add_argument("--rows", default="fixed,resident,augmented,stream,decode")
  parser.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
  parser.add_argument("--stream-threads", type=int, default=4)
  parser.add_argument("--stream-workers", type=int, default=0)
  parser.add_argument("--json")
  args = parser.parse_args()
  rows = args.rows.split(",")
  load_before = os.getloadavg()
  data_dir = args.data or synthetic_folder(args.size)
  listing = discover.list_dataset(data_dir)
  files = listing.lists["train"]  # a folder of class folders is one pool, listed as train
  split, _ = folder.list_files(files)
  rng = np.random.default_rng(0)
  held = rng.permutation(len(split))[:args.dataset]
  decoded, _ = folder.decode_files(folder.FileList([split.paths[i] for i in held],
                                                   split.labels[held].tolist()), args.size)
  data, labels = jax.device_put(decoded.images), jax.device_put(decoded.labels)
  n = len(decoded)
  fixed_data, fixed_labels = data[:args.batch], labels[:args.batch]
  gather_step, gather_state = build(args.arch, args.size, False, make_train_step)
  steps, states, windows = {}, {}, {}
  one = np.float32(1.0)

  def gather_window(name, images, labels_, index_fn):
    def run(k):
      for _ in range(k):
        states[name], metrics = steps[name](states[name], images, labels_, index_fn(), one)
      return metrics
    return run

  for name in rows:
    if name in ("fixed", "resident"):
      steps[name], states[name] = gather_step, jax.tree.map(jnp.copy, gather_state)
    elif name == "augmented":
      steps[name], states[name] = build(args.arch, args.size, True, make_train_step)
    elif name == "stream":
      steps[name], states[name] = build(args.arch, args.size, False, make_batch_train_step)
  if "fixed" in rows:
    windows["fixed"] = gather_window("fixed", fixed_data, fixed_labels,
                                     lambda: np.arange(args.batch, dtype=np.int32))
  for name in ("resident", "augmented"):
    if name in rows:
      windows[name] = gather_window(name, data, labels,
                                    lambda: rng.choice(n, args.batch).astype(np.int32))
  options = stream.StreamOptions(threads=args.stream_threads, workers=args.stream_workers)
  position = {"epoch": 1, "step": 0}
  steps_per_epoch = len(split) // args.batch

  def stream_window(k, train=True):
    if position["step"] + k > steps_per_epoch:
      position["epoch"], position["step"] = position["epoch"] + 1, 0
    batches = stream.train_batches(split, 0, position["epoch"], args.batch, args.size, options,
                                   start_step=position["step"])
    metrics = {"loss": jnp.zeros(())}
    for _, batch in zip(range(k), batches):
      if train:
        states["stream"], metrics = steps["stream"](
            states["stream"], jax.device_put(batch["image"]), jax.device_put(batch["label"]), one)
    batches.close()
    position["step"] += k
    return metrics

  if "stream" in rows:
    windows["stream"] = stream_window
  if "decode" in rows:
    windows["decode"] = lambda k: stream_window(k, train=False)
  times = {k: [] for k in rows}
  for repeat in range(args.repeats + 1):  # the first round compiles and warms up, untimed
    for name in rows:
      start = time.perf_counter()
      jax.block_until_ready(windows[name](args.steps)["loss"])
      if repeat:
        times[name].append((time.perf_counter() - start) / args.steps * 1000)
  median = {k: statistics.median(v) for k, v in times.items()}
  load_after = os.getloadavg()
  print(f"{args.arch} {args.size}px batch {args.batch}, {args.repeats} repeats x {args.steps} steps,"
        f" data {data_dir} ({len(split)} files), {jax.devices()[0].platform}")
  print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
  for name, ms in median.items():
    print(f"  {name:9s} {ms:8.1f} ms/step   x{ms / median[rows[0]]:.3f} of {rows[0]}")
  if not args.data:
    shutil.rmtree(data_dir)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "median_ms": median, "all_ms": times,
                 "load_before": load_before, "load_after": load_after,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                 "device": str(jax.devices()[0]), "jax": jax.__version__}, f, indent=2)


if __name__ == "__main__":
  main()
