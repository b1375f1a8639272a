"""Where a training step spends its time: forward vs forward+backward vs the full step, for
jaxmed and Keras 3 on TensorFlow, plus (jaxmed) XLA's per-op profile grouped by op kind.

  python benchmarks/step_breakdown.py [--model mobilenet_v2] [--size 128] [--runs 5] [--top 25]

Each framework runs in its own subprocess (this file with --framework). Times are medians of
--runs after warm-up, batch 32, finetune phase (everything trains, BatchNorm in training mode).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def _median_s(fn, runs):
  fn()
  fn()
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def jaxmed_breakdown(model_name, size, runs, top):
  import jaxmed  # noqa: F401
  import jax
  import jax.numpy as jnp
  import ml_collections
  from jaxmed.training import optim
  from jaxmed.training.losses import classification_loss
  from jaxmed.models import create_model
  from jaxmed.training.steps import StepOptions, TrainState, make_train_step

  cfg = ml_collections.ConfigDict(dict(arch=model_name, alpha=1.0, weights=None,
                                       head=dict(pooling="avg", hidden=(), dropout=0.0)))
  model = create_model(cfg, 4)
  rng = np.random.default_rng(0)
  images = jax.device_put(rng.integers(0, 256, (32, size, size, 3), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 4, 32).astype(np.int32))
  index = jax.device_put(np.arange(32, dtype=np.int32))
  variables = jax.jit(lambda k: model.init(k, images[:1], train=False))(jax.random.PRNGKey(0))
  params, bstats = variables["params"], variables["batch_stats"]

  def loss_fn(p, x, y):
    logits, upd = model.apply({"params": p, "batch_stats": bstats}, x, train=True,
                              mutable=["batch_stats"])
    return classification_loss(logits, jax.nn.one_hot(y, 4)).mean(), upd

  fwd = jax.jit(lambda p, x, y: loss_fn(p, x, y)[0])
  fwd_bwd = jax.jit(jax.grad(lambda p, x, y: loss_fn(p, x, y)[0]))
  out = {}
  out["forward_ms"] = 1e3 * _median_s(lambda: jax.block_until_ready(fwd(params, images, labels)), runs)
  out["forward_backward_ms"] = 1e3 * _median_s(
      lambda: jax.block_until_ready(fwd_bwd(params, images, labels)), runs)
  labels_tree = optim.param_labels(params, model_name, 0)
  tx, _ = optim.make_optimizer(ml_collections.ConfigDict(dict(epochs=1, learning_rate=1e-3)),
                               labels_tree, 1)
  state = [jax.device_put(TrainState(step=jnp.asarray(0), params=params, batch_stats=bstats,
                                     opt_state=tx.init(params), rng=jax.random.PRNGKey(0)))]
  step = make_train_step(model, tx, StepOptions()).lower(
      state[0], images, labels, index, np.float32(1)).compile()

  def run_step():
    state[0], m = step(state[0], images, labels, index, np.float32(1))
    jax.block_until_ready(m)
  out["step_ms"] = 1e3 * _median_s(run_step, runs)

  # XLA per-op profile of the full step.
  logdir = tempfile.mkdtemp(prefix="jaxmed_prof_")
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    for _ in range(3):
      run_step()
  traces = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
  describe = _hlo_descriptions(step.as_text())
  by_name, by_kind = collections.Counter(), collections.Counter()
  if traces:
    events = json.load(gzip.open(traces[0]))
    events = events["traceEvents"] if isinstance(events, dict) else events
    for e in events:
      op = (e.get("args") or {}).get("hlo_op")
      if e.get("ph") != "X" or "dur" not in e or not op:
        continue
      kind = describe.get(op, op.split(".")[0])
      by_name[f"{op} [{kind}]"] += e["dur"] / 3.0
      if kind.split("[")[0] not in ("while", "call", "conditional"):  # these contain other ops
        by_kind[kind] += e["dur"] / 3.0
  out["profile_dir"] = logdir
  out["top_ops_us"] = by_name.most_common(top)
  out["by_kind_us"] = by_kind.most_common(top)
  return out


def _hlo_descriptions(hlo_text):
  """HLO instruction name -> 'opcode' or 'fusion[conv,reduce,..]' (what its fused body does)."""
  import re
  interesting = ("convolution", "dot", "reduce-window", "select-and-scatter", "reduce", "scatter",
                 "gather", "transpose", "pad", "slice", "dynamic-slice", "dynamic-update-slice")
  bodies, current = {}, None
  for line in hlo_text.splitlines():
    m = re.match(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if m and "=" not in line.split("{")[0]:
      current = m.group(1)
      bodies[current] = set()
      continue
    m = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+(?:\s*\{[^}]*\})?\s+([\w\-]+)\(", line)
    if m and current is not None:
      bodies[current].add(m.group(2))
  names = {}
  for line in hlo_text.splitlines():
    m = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([\w\-]+)\(.*", line)
    if not m:
      continue
    name, opcode = m.group(1), m.group(2)
    if opcode == "fusion":
      called = re.search(r"calls=%?([\w.\-]+)", line)
      ops = bodies.get(called.group(1), set()) if called else set()
      tags = [t for t in interesting if t in ops]
      names[name] = f"fusion[{','.join(tags) or 'elementwise'}]"
    else:
      names[name] = opcode
  return names


def keras_breakdown(model_name, size, runs):
  import keras
  import tensorflow as tf

  apps = {"mobilenet": "MobileNet", "mobilenet_v2": "MobileNetV2", "resnet50v2": "ResNet50V2"}
  base = getattr(keras.applications, apps[model_name])(include_top=False, weights=None,
                                                        input_shape=(size, size, 3))
  inputs = keras.Input((size, size, 3))
  x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
  x = keras.layers.GlobalAveragePooling2D()(base(x))
  model = keras.Model(inputs, keras.layers.Dense(4)(x))
  loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_obj)
  rng = np.random.default_rng(0)
  xs = tf.constant(rng.integers(0, 256, (32, size, size, 3)).astype(np.float32))
  ys = tf.constant(rng.integers(0, 4, 32).astype(np.int32))

  @tf.function
  def fwd(x, y):
    return loss_obj(y, model(x, training=True))

  @tf.function
  def fwd_bwd(x, y):
    with tf.GradientTape() as tape:
      loss = loss_obj(y, model(x, training=True))
    return tape.gradient(loss, model.trainable_weights)

  out = {"forward_ms": 1e3 * _median_s(lambda: fwd(xs, ys).numpy(), runs),
         "forward_backward_ms": 1e3 * _median_s(lambda: [g.numpy() for g in fwd_bwd(xs, ys)][:1],
                                                runs),
         "step_ms": 1e3 * _median_s(lambda: model.train_on_batch(xs, ys), runs)}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--framework", choices=["jaxmed", "keras-tensorflow"])
  parser.add_argument("--model", default="mobilenet_v2")
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--top", type=int, default=25)
  args = parser.parse_args()
  if args.framework == "jaxmed":
    print(json.dumps(jaxmed_breakdown(args.model, args.size, args.runs, args.top)))
    return
  if args.framework == "keras-tensorflow":
    print(json.dumps(keras_breakdown(args.model, args.size, args.runs)))
    return
  results = {}
  for fw in ("jaxmed", "keras-tensorflow"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if fw.startswith("keras"):
      env["KERAS_BACKEND"] = "tensorflow"
    proc = subprocess.run([sys.executable, __file__, "--framework", fw, "--model", args.model,
                           "--size", str(args.size), "--runs", str(args.runs), "--top",
                           str(args.top)], env=env, capture_output=True, text=True, check=True)
    results[fw] = json.loads(proc.stdout.strip().splitlines()[-1])
  print(f"{args.model} {args.size}px, batch 32, finetune; ms, median of {args.runs}")
  print(f"{'':<18}{'forward':>10}{'fwd+bwd':>10}{'backward':>10}{'full step':>11}")
  for fw, r in results.items():
    print(f"{fw:<18}{r['forward_ms']:>10.0f}{r['forward_backward_ms']:>10.0f}"
          f"{r['forward_backward_ms'] - r['forward_ms']:>10.0f}{r['step_ms']:>11.0f}")
  prof = results["jaxmed"]
  print(f"\njaxmed step, XLA ops by kind (us per step; trace in {prof['profile_dir']}):")
  for name, us in prof["by_kind_us"]:
    print(f"  {name:<40}{us:>12.0f}")
  print("\njaxmed step, top ops (us per step):")
  for name, us in prof["top_ops_us"]:
    print(f"  {name:<60}{us:>12.0f}")


if __name__ == "__main__":
  main()
