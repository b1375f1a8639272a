"""The compiled train and eval steps, with a front for each input path (jaxmed/training/input_path.py):

- gather (device-resident data): the step receives the whole uint8 dataset on the device and a
  batch of indices, and gathers its images there, so training moves no image data from the host;
- batch (streamed data): the step receives the uint8 batch itself, sharded over the 'data' axis.

Both fronts call the same inner step, so given the same batch they compute the same update.
Augmentation runs inside the step, per example, on the device."""

from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxmed.models import layers
from jaxmed.training.losses import classification_loss


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


@flax.struct.dataclass
class StepOptions:
  """Static per-phase choices: which backbone stages train, BatchNorm mode, the loss."""
  trainable_from: int = flax.struct.field(pytree_node=False, default=0)
  bn_train: bool = flax.struct.field(pytree_node=False, default=True)
  label_smoothing: float = flax.struct.field(pytree_node=False, default=0.0)
  focal_gamma: float = flax.struct.field(pytree_node=False, default=0.0)


def _train_on_batch(model, tx, options: StepOptions, class_weights, augment, apply_fn=None):
  """The step proper: (state, x (B, ...), y (B,), lr_scale) -> (state, metrics).

  `apply_fn(params, batch_stats, x, dropout_rng) -> (logits, batch_stats)` defaults to the whole
  classifier on uint8 images; the cached-feature front passes the head alone.
  """
  num_classes = model.head.num_classes
  if apply_fn is None:
    def apply_fn(params, batch_stats, x, dropout_rng):
      logits, updates = model.apply(
          {"params": params, "batch_stats": batch_stats}, x, train=True,
          trainable_from=options.trainable_from, bn_train=options.bn_train,
          mutable=["batch_stats"], rngs={"dropout": dropout_rng})
      return logits, updates["batch_stats"]

  def step(state: TrainState, x, y, lr_scale):
    step_rng = jax.random.fold_in(state.rng, state.step)
    dropout_rng, augment_rng = jax.random.split(step_rng)
    targets = jax.nn.one_hot(y, num_classes)
    if augment is not None:
      x, targets = augment(augment_rng, x, targets)

    def loss_fn(params):
      logits, batch_stats = apply_fn(params, state.batch_stats, x, dropout_rng)
      loss = classification_loss(logits, targets, weights=class_weights,
                                 focal_gamma=options.focal_gamma,
                                 label_smoothing=options.label_smoothing).mean()
      return loss, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    correct = jnp.sum(jnp.argmax(logits, -1) == y)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, _step_metrics(loss, correct)

  return step


def _step_metrics(loss, correct) -> dict:
  return {"loss": loss.astype(jnp.float32), "correct": correct.astype(jnp.int32)}


def steps_in_one_dispatch(one_step, num_fixed: int):
  """Several steps per dispatch (Keras' steps_per_execution): returns
  block(state, *fixed, *stacked, active, lr_scale) -> (state, metrics with a leading K axis),
  which runs one_step(state, *fixed, *[a[k] for a in stacked], lr_scale) for k = 0..K-1 under
  lax.scan. `fixed` are the arguments every step shares (the resident images); `stacked` hold
  each step's own (batch indices, or the batch itself) on a leading axis of length K. Steps with
  active[k] False are skipped (state unchanged, metrics zero): they pad a block that a checkpoint
  or the epoch's end cuts short, so one compiled program serves every block. The step counter,
  hence each step's random keys, advances only on active steps, as with one step per dispatch."""

  def block(state, *args):
    fixed, stacked, active, lr_scale = args[:num_fixed], args[num_fixed:-2], args[-2], args[-1]

    def body(state, xs):
      *step_args, on = xs

      def run(state):
        return one_step(state, *fixed, *step_args, lr_scale)

      def skip(state):
        return state, _step_metrics(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))

      return jax.lax.cond(on, run, skip, state)

    return jax.lax.scan(body, state, (*stacked, active))

  return block


def _gathering(inner):
  def step(state, images, labels, batch_index, lr_scale):
    return inner(state, images[batch_index], labels[batch_index], lr_scale)
  return step


def _jit_steps(one_step, num_fixed: int, steps_per_dispatch: int):
  if steps_per_dispatch == 1:  # today's program, one step per call
    return jax.jit(one_step, donate_argnums=(0,))
  return jax.jit(steps_in_one_dispatch(one_step, num_fixed), donate_argnums=(0,))


def make_train_step(model, tx, options: StepOptions, class_weights=None,
                    augment: Optional[Callable] = None, steps_per_dispatch: int = 1):
  """Returns step(state, images, labels, batch_index, lr_scale) -> (state, metrics), jitted with
  the state donated; the batch is images[batch_index] gathered on the device. `lr_scale`
  (reduce-on-plateau) multiplies the updates; it is an input, so changing it does not recompile.
  With steps_per_dispatch K > 1: block(state, images, labels, block_index (K, B), active (K,),
  lr_scale), see steps_in_one_dispatch."""
  inner = _train_on_batch(model, tx, options, class_weights, augment)
  return _jit_steps(_gathering(inner), 2, steps_per_dispatch)


def make_batch_train_step(model, tx, options: StepOptions, class_weights=None,
                          augment: Optional[Callable] = None, steps_per_dispatch: int = 1):
  """Returns step(state, batch_images, batch_labels, lr_scale) -> (state, metrics): the same step
  as make_train_step, fed the batch itself (the streaming input path); with K > 1,
  block(state, images (K, B, ...), labels (K, B), active (K,), lr_scale)."""
  return _jit_steps(_train_on_batch(model, tx, options, class_weights, augment), 0,
                    steps_per_dispatch)


def _batch_moments(model, options: StepOptions):
  """(params, batch_stats, x) -> the training-mode mean and variance of x at every BatchNorm that
  trains in this phase (options as the phase's train step), as a tree shaped like batch_stats;
  BatchNorms in inference mode contribute nothing. No augmentation: the statistics are for
  evaluating unaugmented images. Dropout runs with a fixed key, as somewhere in training."""
  def moments(params, batch_stats, x):
    _, variables = model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True,
        trainable_from=options.trainable_from, bn_train=options.bn_train,
        mutable=["batch_stats", layers.BATCH_MOMENTS], rngs={"dropout": jax.random.PRNGKey(0)})
    return variables.get(layers.BATCH_MOMENTS, {})
  return moments


def make_moments_step(model, options: StepOptions):
  """Returns jit(fn)(params, batch_stats, images, labels, batch_index) -> batch moments (the
  train step's arguments on the resident path; labels unused)."""
  moments = _batch_moments(model, options)
  return jax.jit(lambda params, batch_stats, images, labels, batch_index:
                 moments(params, batch_stats, images[batch_index]))


def make_batch_moments_step(model, options: StepOptions):
  """Returns jit(fn)(params, batch_stats, batch_images, batch_labels) -> batch moments."""
  moments = _batch_moments(model, options)
  return jax.jit(lambda params, batch_stats, x, labels: moments(params, batch_stats, x))


def _logits(model, params, batch_stats, x):
  return model.apply({"params": params, "batch_stats": batch_stats}, x,
                     train=False).astype(jnp.float32)


def make_eval_step(model):
  """Returns jit(step)(params, batch_stats, images, batch_index) -> logits (float32)."""
  return jax.jit(lambda params, batch_stats, images, batch_index:
                 _logits(model, params, batch_stats, images[batch_index]))


def make_batch_eval_step(model):
  """Returns jit(step)(params, batch_stats, batch_images) -> logits (float32)."""
  return jax.jit(lambda params, batch_stats, x: _logits(model, params, batch_stats, x))


# Cached features (frozen phase, no augmentation): the backbone ran once per image; the step
# trains the head on rows gathered from the cached (N, 1, 1, C) features.
def make_features_step(model):
  """Returns jit(fn)(params, batch_stats, images, batch_index) -> pooled float32 features."""
  return jax.jit(lambda params, batch_stats, images, batch_index: model.apply(
      {"params": params, "batch_stats": batch_stats}, images[batch_index],
      method="pooled_features"))


def make_feature_train_step(model, tx, options: StepOptions, class_weights=None, augment=None,
                            steps_per_dispatch: int = 1):
  """make_train_step's signature with features in place of images; the same loss and update
  as the full step of a frozen backbone, whose parameters get zero gradients either way."""
  if augment is not None:
    raise ValueError("cached features are computed once, so they cannot be augmented")

  def head_apply(params, batch_stats, x, dropout_rng):
    logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                         method="classify_features", rngs={"dropout": dropout_rng})
    return logits, batch_stats

  inner = _train_on_batch(model, tx, options, class_weights, None, head_apply)
  return _jit_steps(_gathering(inner), 2, steps_per_dispatch)


def make_feature_eval_step(model):
  """Returns jit(step)(params, batch_stats, features, batch_index) -> logits (float32)."""
  return jax.jit(lambda params, batch_stats, features, batch_index: model.apply(
      {"params": params, "batch_stats": batch_stats}, features[batch_index],
      method="classify_features").astype(jnp.float32))
