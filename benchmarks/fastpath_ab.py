"""A/B of jaxmed's CPU fast-path pieces on one whole train step, in one process.

  python benchmarks/fastpath_ab.py [--model mobilenet_v2] [--size 128] [--rounds 8] \
      [--phase finetune|frozen] [--variants before,pointwise,nowinograd,current]

Each variant patches, at trace time, what the models call: `before` = lax for 1x1 and 3x3
convs and Flax's nn.BatchNorm followed by the activation; `pointwise` = 1x1 convs as GEMMs,
Flax BatchNorm; `nowinograd` = GEMMs + fused BatchNorm, 3x3 convs by lax; `current` = what
jaxmed runs (also Winograd for wide 3x3 stride-1 convs). One fast path at a time: `no-pointwise`,
`no-winograd`, `no-bnfusion`, `no-depthwise`, `no-pooling`, `no-small_maps` are `current` less
that one piece, and `lax` is every piece off; a `no-X` slower than `current` means X pays on this
jaxlib:

  python benchmarks/fastpath_ab.py --variants current,no-pointwise,no-winograd,no-bnfusion,no-depthwise,no-pooling,lax Variants are compiled ahead of time,
then stepped round-robin so machine noise hits them alike (each visit: one untimed step, then
the timed one); the table gives the median ms per step (first round dropped) and the ratio to
the first variant. Batch 32, Adam, random uint8 images, fp32; `frozen` is the frozen-backbone
step of the training loop's phase 1 (training/phase.py). Runs under the allocator `python -m jaxmed.train` uses.
"""

import argparse
import statistics
import time
from typing import Any

import jaxmed  # noqa: F401  (XLA flags before jax starts)
from jaxmed.runtime import platform
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import jaxmed.models.mobilenet_v1 as mobilenet_v1
import jaxmed.models.mobilenet_v2 as mobilenet_v2
import jaxmed.models.resnet as resnet
from jaxmed.training import optim
from jaxmed.models import create_model
from jaxmed.ops import conv, pooling
from jaxmed.training.steps import StepOptions, TrainState, make_train_step

MODULES = (mobilenet_v1, mobilenet_v2, resnet)
ORIGINAL = {"pointwise_ok": conv._pointwise_ok, "winograd_ok": conv._winograd_ok,
            "depthwise_ok": conv._fast_depthwise_ok, "pool_fast": pooling.cpu_fast_paths,
            "small_map_pads": conv._small_map_pads,
            "bn": mobilenet_v2.BatchNorm}
PIECES = ("pointwise", "winograd", "bnfusion", "depthwise", "pooling", "small_maps")
# The pieces each variant turns off.
OFF = {"before": {"pointwise", "winograd", "bnfusion", "small_maps"},
       "pointwise": {"winograd", "bnfusion", "small_maps"}, "nowinograd": {"winograd", "small_maps"},
       "current": set(), "lax": set(PIECES),
       **{f"no-{p}": {p} for p in PIECES}}


class FlaxBatchNormThenActivation(nn.BatchNorm):
  """The models' BatchNorm interface on top of Flax's nn.BatchNorm (autodiff backward)."""
  activation: Any = None

  @nn.compact
  def __call__(self, x):
    y = super().__call__(x)
    if self.activation == "relu6":
      return jnp.clip(y, 0, 6)
    return nn.relu(y) if self.activation == "relu" else y


def patch(variant: str):
  off = OFF[variant]
  never = lambda *a: False
  conv._pointwise_ok = never if "pointwise" in off else ORIGINAL["pointwise_ok"]
  conv._winograd_ok = never if "winograd" in off else ORIGINAL["winograd_ok"]
  conv._fast_depthwise_ok = never if "depthwise" in off else ORIGINAL["depthwise_ok"]
  pooling.cpu_fast_paths = never if "pooling" in off else ORIGINAL["pool_fast"]
  conv._small_map_pads = (lambda *a: None) if "small_maps" in off else ORIGINAL["small_map_pads"]
  bn = FlaxBatchNormThenActivation if "bnfusion" in off else ORIGINAL["bn"]
  for module in MODULES:
    module.BatchNorm = bn


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--model", default="mobilenet_v2")
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--phase", default="finetune", choices=["finetune", "frozen"])
  parser.add_argument("--variants", default="before,pointwise,nowinograd,current")
  args = parser.parse_args()
  variants = args.variants.split(",")

  config = ml_collections.ConfigDict(dict(arch=args.model, alpha=1.0, weights=None,
                                          head=dict(pooling="avg", hidden=(), dropout=0.0)))
  model = create_model(config, 4)
  rng = np.random.default_rng(0)
  images = jax.device_put(rng.integers(0, 256, (32, args.size, args.size, 3), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 4, 32).astype(np.int32))
  index = jax.device_put(np.arange(32, dtype=np.int32))
  variables = jax.jit(lambda k: model.init(k, images[:1], train=False))(jax.random.PRNGKey(0))
  params, stats = variables["params"], variables["batch_stats"]
  frozen = args.phase == "frozen"  # phase 1 (training/phase.py): stages below num_stages frozen
  options = (StepOptions(trainable_from=model.num_stages, bn_train=False) if frozen
             else StepOptions())
  tx, _ = optim.make_optimizer(ml_collections.ConfigDict(dict(epochs=1, learning_rate=1e-3)),
                               optim.param_labels(params, args.model, None if frozen else 0), 1)
  steps, states = {}, {}
  for v in variants:
    patch(v)
    state = TrainState(jnp.asarray(0), jax.tree.map(jnp.copy, params),  # steps donate the state
                       jax.tree.map(jnp.copy, stats), tx.init(params), jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    steps[v] = make_train_step(model, tx, options).lower(
        state, images, labels, index, np.float32(1)).compile()
    print(f"{v}: compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    states[v] = state
  patch("current")
  times = {v: [] for v in variants}
  for _ in range(args.rounds):
    for v in variants:
      # An untimed step first: XLA CPU takes each run's temporaries as one block (~2 GB for
      # ResNet50V2 224 px fine-tuning), and the allocator may hand the block of the variant
      # that ran before to this one and map this one's afresh (measured: ~1200 page faults and
      # +40 % on the larger variant's step when timed right after the switch, none after).
      states[v], metrics = steps[v](states[v], images, labels, index, np.float32(1))
      jax.block_until_ready(metrics)
      t0 = time.perf_counter()
      states[v], metrics = steps[v](states[v], images, labels, index, np.float32(1))
      jax.block_until_ready(metrics)
      times[v].append(time.perf_counter() - t0)
  base = statistics.median(times[variants[0]][1:])
  print(f"\n{args.model} {args.size} px, batch 32, {args.phase} step; median of {args.rounds - 1}")
  print("| variant | ms/step | vs first |\n|---|---|---|")
  for v in variants:
    ms = statistics.median(times[v][1:])
    print(f"| {v} | {1e3 * ms:.0f} | {ms / base:.3f} |")


if __name__ == "__main__":
  platform.restart_with_fast_allocator()  # as python -m jaxmed.train runs
  main()
