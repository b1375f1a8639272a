"""A training phase's pieces that exist before its first step: its step options and optimizer,
its first state, and its programs (optimizer init and train step), compiled or taken from the
program cache, and a later phase's compiled ahead in the background. training/phase.py runs them."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.training import compile_ahead as compile_ahead_lib
from jaxmed.training import optim
from jaxmed.training.steps import StepOptions, TrainState


def phase_options(config, name: str, num_stages: int) -> StepOptions:
  common = dict(label_smoothing=config.train.label_smoothing,
                focal_gamma=config.train.get("focal_gamma", 0.0))
  if name == "frozen":
    return StepOptions(trainable_from=num_stages, bn_train=False, **common)
  phase = config[name]
  unfreeze = phase.get("unfreeze", "all")
  trainable_from = 0 if unfreeze == "all" else max(0, num_stages - int(unfreeze))
  return StepOptions(trainable_from=trainable_from,
                     bn_train=phase.get("batchnorm", "train") == "train", **common)


def phase_optimizer(job, name: str) -> tuple:
  """(step options, trainable/frozen label tree, optax transform, schedule) of a phase."""
  options = phase_options(job.config, name, job.num_stages)
  labels_tree = optim.param_labels(job.params, job.config.model.arch,
                                   None if name == "frozen" else options.trainable_from)
  tx, schedule = optim.make_optimizer(job.config[name], labels_tree, job.steps_per_epoch)
  return options, labels_tree, tx, schedule


def initial_state(job, tx, global_step: int, rng, init_optimizer=None) -> TrainState:
  """The phase's first TrainState; `init_optimizer` (optimizer_init_program) stands in for
  tx.init, which op by op dispatches a few hundred tiny computations."""
  return TrainState(step=jnp.asarray(global_step), params=job.params, batch_stats=job.batch_stats,
                    opt_state=(init_optimizer or tx.init)(job.params), rng=rng)


def optimizer_init_program(job, name: str, tx):
  """Phase `name`'s tx.init as one compiled program (from the program cache): op by op it took
  0.18 s before the demo's first step and 0.39 s at the fine-tuning phase's start (2-core CPU,
  2026-12-04). Compiled for the parameters' shapes, replicated (as every phase gets them)."""
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=job.replicated),
                        job.params)
  return job.programs.compile(f"optimizer_init_{name}",
                              lambda: jax.jit(tx.init, out_shardings=job.replicated), (params,),
                              {**job.program_parts, "phase": name})


# train.steps_per_dispatch='auto': one step per dispatch on CPU, where XLA runs the convolution
# gradients inside a loop body (lax.scan) 35-140x slower than the same convolutions in a plain
# program (measured 2026-12-02, jaxlib 0.10.2 and 0.12.0.1: benchmarks/steps_per_dispatch.py, LeNet
# 23 -> 570 ms per step); 8 on GPU and TPU, where a step's launch and host round trip are what a
# small model waits for (Keras' steps_per_execution).
AUTO_STEPS_PER_DISPATCH = {"cpu": 1}
ACCELERATOR_STEPS_PER_DISPATCH = 8


def steps_per_dispatch_setting(config) -> int:
  """train.steps_per_dispatch as a number ('auto' resolved for this backend)."""
  setting = str(config.train.get("steps_per_dispatch", "auto"))
  if setting == "auto":
    return AUTO_STEPS_PER_DISPATCH.get(jax.default_backend(), ACCELERATOR_STEPS_PER_DISPATCH)
  return int(setting)


def steps_per_dispatch(job) -> int:
  """train.steps_per_dispatch, no longer than an epoch."""
  return max(1, min(steps_per_dispatch_setting(job.config), job.steps_per_epoch))


def train_program(feed, job, name: str, tx, options: StepOptions, block: int, state):
  """Phase `name`'s train step (one step, or a block of `block`) compiled for `state`, or
  loaded from the program cache (its key: the job's parts, the phase, the feed's arguments)."""
  example = feed.example_batch() if block == 1 else feed.example_block(block)
  args = (state, *example, np.float32(1.0))

  def make():
    return feed.make_train_step(job.model, tx, options, job.class_weights, job.augment, block)

  parts = {**job.program_parts, "phase": name, "feed": type(feed).__name__, "block": block}
  return job.programs.compile(f"train_{name}", make, args, parts)


def compile_ahead(job, name: str) -> compile_ahead_lib.Compiling:
  """A later phase's train step, compiled in the background from the shapes of its state (that
  phase starts from the parameters the earlier one leaves, of the same shapes and placement)."""
  options, _, tx, _ = phase_optimizer(job, name)

  def build():
    shapes = jax.eval_shape(lambda rng: initial_state(job, tx, 0, rng), jax.random.PRNGKey(0))
    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=job.replicated,
                                                        weak_type=s.weak_type), shapes)
    return train_program(job.feed, job, name, tx, options, steps_per_dispatch(job), state)

  job.ahead[f"optimizer_init_{name}"] = compile_ahead_lib.Compiling(
      f"optimizer_init_{name}", lambda: optimizer_init_program(job, name, tx), job.timings)
  return compile_ahead_lib.Compiling(f"train_{name}", build, job.timings)
