"""Cost of on-device augmentation relative to a MobileNetV2 train step (forward + backward).

  python benchmarks/augment_overhead.py [--size 224] [--batch 32] [--runs 5] [--preset mri]

Times, median of --runs after compile and warm-up: (1) the augmenter alone, jitted; (2) a jitted
forward+backward of torchvision/mobilenet_v2 (random init, BatchNorm in train mode); (3) the same
with augmentation inside the jitted function, as the train step runs it. Prints the ratio (3)/(2).
"""

import argparse
import json
import os
import statistics
import time

import jaxmed  # noqa: F401  (sets the XLA CPU flags before jax initialises)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmed.augment import make_augmenter
from jaxmed.models import create_model

NUM_CLASSES = 4


def median_seconds(fn, args, runs):
  jax.block_until_ready(fn(*args))  # compile
  jax.block_until_ready(fn(*args))  # warm-up
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def model_config(arch):
  return ml_collections.ConfigDict(dict(
      arch=arch, alpha=1.0, weights=None,
      head=ml_collections.ConfigDict(dict(pooling="avg", hidden=(128,), dropout=0.2))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--arch", default="torchvision/mobilenet_v2")
  parser.add_argument("--preset", default="mri", help="augment preset; extras below are added")
  parser.add_argument("--json", help="also write the numbers to this file")
  args = parser.parse_args()

  # a demanding config: every geometric transform (one resampling), photometric jitter, erasing
  augment = make_augmenter(dict(preset=args.preset, shear_range=5.0, random_erasing=0.25,
                                channel_shift_range=10.0))
  model = create_model(model_config(args.arch), NUM_CLASSES)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (args.batch, args.size, args.size, 3), np.uint8))
  labels = jax.nn.one_hot(jnp.asarray(rng.integers(0, NUM_CLASSES, args.batch)), NUM_CLASSES)
  variables = jax.jit(lambda k: model.init(k, images[:1]))(jax.random.PRNGKey(0))
  params, stats = variables["params"], variables["batch_stats"]
  key = jax.random.PRNGKey(1)

  def loss_fn(params, x, y, key):
    logits, updates = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                  mutable=["batch_stats"], rngs={"dropout": key})
    loss = -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), axis=-1))
    return loss, updates["batch_stats"]

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  @jax.jit
  def plain_step(params, images, labels, key):
    return grad_fn(params, images.astype(jnp.float32), labels, key)

  @jax.jit
  def augmented_step(params, images, labels, key):
    aug_key, drop_key = jax.random.split(key)
    x, y = augment(aug_key, images, labels)
    return grad_fn(params, x, y, drop_key)

  load = os.getloadavg()
  aug_s = median_seconds(jax.jit(augment), (key, images, labels), args.runs)
  plain_s = median_seconds(plain_step, (params, images, labels, key), args.runs)
  augmented_s = median_seconds(augmented_step, (params, images, labels, key), args.runs)
  load_after = os.getloadavg()
  result = dict(arch=args.arch, size=args.size, batch=args.batch, runs=args.runs,
                augment_ms=aug_s * 1e3, step_ms=plain_s * 1e3, augmented_step_ms=augmented_s * 1e3,
                ratio=augmented_s / plain_s, augment_over_step=aug_s / plain_s,
                loadavg_before=load, loadavg_after=load_after, devices=str(jax.devices()))
  print(f"{args.arch} {args.size}x{args.size} batch {args.batch}, median of {args.runs} "
        f"on {jax.devices()[0].platform} (load avg {load[0]:.2f} -> {load_after[0]:.2f})")
  print(f"  augmentation alone      {aug_s * 1e3:9.1f} ms")
  print(f"  forward+backward        {plain_s * 1e3:9.1f} ms")
  print(f"  with augmentation       {augmented_s * 1e3:9.1f} ms   ratio {result['ratio']:.3f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
