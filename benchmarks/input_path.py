"""Device-resident input vs a fixed in-memory batch, and augmentation's cost, for one train step.

  python benchmarks/input_path.py [--arch mobilenet_v2] [--size 224] [--batch 32] [--repeats 7]

Times the same compiled jaxmed train step three ways, interleaved so machine noise hits all alike:
  fixed     - the batch index is always 0..B-1 of a B-image array (no gather work to speak of)
  resident  - a random batch gathered by index from an N-image uint8 dataset on the device
  augmented - resident + the `mri` augmentation preset inside the step
Prints medians (ms/step) and the ratios to `fixed`; --json FILE writes them.
"""

import argparse
import json
import statistics
import time

import jaxmed  # noqa: F401  (XLA flags before JAX initialises)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmed import optim
from jaxmed.augment import make_augmenter
from jaxmed.models import create_model
from jaxmed.steps import StepOptions, TrainState, make_train_step


def build(arch, size, batch, augment):
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
  return make_train_step(model, tx, StepOptions(), augment=aug), state


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--arch", default="mobilenet_v2")
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--dataset", type=int, default=800, help="images held on the device")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--steps", type=int, default=3, help="steps per timed window")
  parser.add_argument("--json")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  data = jax.device_put(rng.integers(0, 255, (args.dataset, args.size, args.size, 3), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 4, args.dataset).astype(np.int32))
  fixed_data, fixed_labels = data[:args.batch], labels[:args.batch]
  plain_step, plain_state = build(args.arch, args.size, args.batch, False)
  aug_step, aug_state = build(args.arch, args.size, args.batch, True)
  states = {"fixed": plain_state, "resident": jax.tree.map(jnp.copy, plain_state),
            "augmented": aug_state}
  steps = {"fixed": plain_step, "resident": plain_step, "augmented": aug_step}
  inputs = {
      "fixed": lambda: (fixed_data, fixed_labels, np.arange(args.batch, dtype=np.int32)),
      "resident": lambda: (data, labels, rng.choice(args.dataset, args.batch).astype(np.int32)),
      "augmented": lambda: (data, labels, rng.choice(args.dataset, args.batch).astype(np.int32)),
  }
  times = {k: [] for k in steps}
  one = np.float32(1.0)
  for repeat in range(args.repeats + 1):  # the first round compiles and warms up, untimed
    for name in steps:
      start = time.perf_counter()
      for _ in range(args.steps):
        states[name], metrics = steps[name](states[name], *inputs[name](), one)
      jax.block_until_ready(metrics["loss"])
      if repeat:
        times[name].append((time.perf_counter() - start) / args.steps * 1000)
  median = {k: statistics.median(v) for k, v in times.items()}
  print(f"{args.arch} {args.size}px batch {args.batch}, {args.repeats} repeats x {args.steps} steps")
  for name, ms in median.items():
    print(f"  {name:9s} {ms:8.1f} ms/step   x{ms / median['fixed']:.3f} of fixed")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "median_ms": median, "all_ms": times}, f, indent=2)


if __name__ == "__main__":
  main()
