"""One framework, one (model, size, phase): builds the training step, then times step windows on
request. Started by benchmarks/throughput.py as a subprocess, one per framework, so frameworks
never share threads, allocators or XLA state.

  python benchmarks/_worker.py FRAMEWORK MODEL SIZE PHASE [--batch 32]

Protocol (JSON lines): the worker writes one line when set up ({"compile_s", "first_step_s",
"flops", ...}), then answers each stdin line {"steps": N} with {"seconds": ...} for N back-to-back
training steps, and {"cmd": "rss"} with {"peak_rss_mb": ...}. Everything else any library prints
goes to stderr.
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

NUM_CLASSES = 4
KERAS_APPS = {"mobilenet": "MobileNet", "mobilenet_v2": "MobileNetV2", "resnet50v2": "ResNet50V2",
              "efficientnet_b0": "EfficientNetB0", "densenet121": "DenseNet121"}


def jaxmed_platform():
  """jaxmed.runtime.platform (the allocator helpers). A process that has not imported jaxmed yet
  (a Keras worker, the benchmark's parent) imports it with JAXMED_XLA_DEFAULTS=0, so jaxmed's XLA
  flag never reaches Keras' XLA; the variable is restored at once, so child processes (jaxmed's
  workers) still get jaxmed's defaults."""
  if "jaxmed" not in sys.modules:
    saved = os.environ.get("JAXMED_XLA_DEFAULTS")
    os.environ["JAXMED_XLA_DEFAULTS"] = "0"
    try:
      import jaxmed.runtime.platform  # noqa: F401
    finally:
      if saved is None:
        del os.environ["JAXMED_XLA_DEFAULTS"]
      else:
        os.environ["JAXMED_XLA_DEFAULTS"] = saved
  return sys.modules["jaxmed.runtime.platform"]


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class JaxmedStep:
  """jaxmed's own training step (training/steps.py), built as training/phase.py builds it."""

  def __init__(self, arch: str, size: int, phase: str, batch: int, dtype: str = "float32"):
    import jaxmed  # noqa: F401  (sets the XLA CPU flag before jax initialises)
    import jax
    import jax.numpy as jnp
    import ml_collections
    from jaxmed.training import optim
    from jaxmed.models import create_model
    from jaxmed.training.steps import StepOptions, TrainState, make_train_step

    self.jax = jax
    model_config = ml_collections.ConfigDict(dict(
        arch=arch, alpha=1.0, weights=None, dtype=dtype,
        head=dict(pooling="avg", hidden=(), dropout=0.0)))  # GAP + Dense(4), as the Keras model
    model = create_model(model_config, NUM_CLASSES)
    from jaxmed.models.registry import compute_dtype
    self.precision = compute_dtype(model_config)  # 'auto' resolved: what the row measured
    dummy = jnp.zeros((1, size, size, 3), jnp.uint8)
    variables = jax.jit(lambda key: model.init(key, dummy, train=False))(jax.random.PRNGKey(0))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if phase == "frozen":  # training/phase.py's phase_options + param_labels for phase 1
      options = StepOptions(trainable_from=model.num_stages, bn_train=False)
      labels_tree = optim.param_labels(params, arch, None)
    else:
      options = StepOptions(trainable_from=0, bn_train=True)
      labels_tree = optim.param_labels(params, arch, 0)
    phase_config = ml_collections.ConfigDict(dict(epochs=1, learning_rate=1e-3, optimizer="adam"))
    tx, _ = optim.make_optimizer(phase_config, labels_tree, steps_per_epoch=1)
    self.state = jax.device_put(TrainState(step=jnp.asarray(0), params=params,
                                           batch_stats=batch_stats, opt_state=tx.init(params),
                                           rng=jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    self.images = jax.device_put(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    self.labels = jax.device_put(rng.integers(0, NUM_CLASSES, batch).astype(np.int32))
    self.index = jax.device_put(np.arange(batch, dtype=np.int32))  # every image, every step
    self.scale = np.float32(1.0)
    self.trainable = sum(x.size for x, l in zip(jax.tree.leaves(params),
                                                jax.tree.leaves(labels_tree)) if l == "trainable")
    jax.block_until_ready(self.state)

    t0 = time.perf_counter()
    lowered = make_train_step(model, tx, options).lower(
        self.state, self.images, self.labels, self.index, self.scale)
    self.step = lowered.compile()
    self.compile_s = time.perf_counter() - t0
    cost = self.step.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    self.flops = float(cost["flops"]) if cost and "flops" in cost else None
    self.info = {"jax": jax.__version__, "device": str(jax.devices()[0]),
                 "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
                 "allocator": jaxmed_platform().loaded_allocator(),
                 "dtype": self.precision["dtype"], "dtype_reason": self.precision["reason"]}

  def run(self, steps: int):
    for _ in range(steps):
      self.state, metrics = self.step(self.state, self.images, self.labels, self.index, self.scale)
    self.jax.block_until_ready((self.state, metrics))


class KerasStep:
  """A Keras 3 user's model: keras.applications backbone + GAP + Dense(4), Adam(1e-3), sparse
  categorical cross-entropy, compile() defaults (jit_compile='auto'), timed with train_on_batch."""

  def __init__(self, arch: str, size: int, phase: str, batch: int, policy: str = "float32"):
    import keras

    self.keras = keras
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    base = getattr(keras.applications, KERAS_APPS[arch])(
        include_top=False, weights=None, input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)  # preprocess_input('tf') in-model
    if phase == "frozen":  # the Keras transfer-learning guide: trainable=False, BN in inference
      base.trainable = False
      x = base(x, training=False)
    else:
      x = base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # float32 logits, as Keras' mixed-precision guide has the last layer
    outputs = keras.layers.Dense(NUM_CLASSES, dtype="float32")(x)
    self.model = keras.Model(inputs, outputs)
    self.model.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    # Float images in 0..255 from host memory, as ImageDataGenerator / a numpy array feeds them.
    self.images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.float32)
    self.labels = rng.integers(0, NUM_CLASSES, batch).astype(np.int32)
    self.trainable = int(sum(np.prod(w.shape) for w in self.model.trainable_weights))
    t0 = time.perf_counter()
    self.model.train_on_batch(self.images, self.labels)  # traces (and compiles, if XLA) the step
    self.compile_s = time.perf_counter() - t0
    self.flops = None
    self.info = {"keras": keras.__version__, "backend": keras.backend.backend(),
                 "jit_compile": bool(self.model.jit_compile),
                 "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "policy": policy,
                 "allocator": jaxmed_platform().loaded_allocator()}
    if keras.backend.backend() == "tensorflow":
      import tensorflow as tf
      self.info["tensorflow"] = tf.__version__
    else:
      import jax
      self.info["jax"] = jax.__version__
      self.info["xla_flags"] = os.environ.get("XLA_FLAGS", "")

  def run(self, steps: int):
    for _ in range(steps):
      self.model.train_on_batch(self.images, self.labels)  # returns the loss: waits for the step


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("framework", choices=["jaxmed", "jaxmed-bf16", "keras-tensorflow",
                                            "keras-tensorflow-bf16", "keras-jax"])
  parser.add_argument("model", choices=sorted(KERAS_APPS))
  parser.add_argument("size", type=int)
  parser.add_argument("phase", choices=["finetune", "frozen"])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args()
  if args.framework.startswith("jaxmed"):  # as `python -m jaxmed.train` does, before JAX starts
    import jaxmed.runtime.platform
    jaxmed.runtime.platform.restart_with_fast_allocator()

  # The protocol owns the real stdout; anything printed by a library goes to stderr.
  proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

  def send(obj):
    proto.write(json.dumps(obj) + "\n")
    proto.flush()

  t_start = time.perf_counter()
  if args.framework in ("jaxmed", "jaxmed-bf16"):
    runner = JaxmedStep(args.model, args.size, args.phase, args.batch,
                        "bfloat16" if args.framework == "jaxmed-bf16" else "auto")
  else:
    runner = KerasStep(args.model, args.size, args.phase, args.batch,
                       "mixed_bfloat16" if args.framework.endswith("-bf16") else "float32")
  t0 = time.perf_counter()
  runner.run(1)
  first_step_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  runner.run(args.warmup)
  warm_step_s = (time.perf_counter() - t0) / max(1, args.warmup)
  send({"setup_s": time.perf_counter() - t_start, "compile_s": runner.compile_s,
        "first_step_s": first_step_s, "warm_step_s": warm_step_s, "flops": runner.flops,
        "trainable_params": runner.trainable, "info": runner.info})
  for line in sys.stdin:
    request = json.loads(line)
    if request.get("cmd") == "rss":
      send({"peak_rss_mb": _peak_rss_mb()})
    elif request.get("cmd") == "quit":
      break
    else:
      t0 = time.perf_counter()
      runner.run(int(request["steps"]))
      send({"seconds": time.perf_counter() - t0})


if __name__ == "__main__":
  main()
