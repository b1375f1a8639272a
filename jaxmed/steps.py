"""The compiled train and eval steps. The dataset lives on the device; a step receives batch
indices and gathers its images there, so steady-state training moves no image data from the host.
Augmentation runs inside the step, per example, on the device."""

from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxmed.losses import classification_loss


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


def make_train_step(model, tx, options: StepOptions, class_weights=None,
                    augment: Optional[Callable] = None):
  """Returns step(state, images, labels, batch_index, lr_scale) -> (state, metrics), jitted with
  the state donated. `lr_scale` (reduce-on-plateau) multiplies the updates; it is an input, so
  changing it does not recompile."""
  num_classes = model.head.num_classes

  def step(state: TrainState, images, labels, batch_index, lr_scale):
    x, y = images[batch_index], labels[batch_index]
    step_rng = jax.random.fold_in(state.rng, state.step)
    dropout_rng, augment_rng = jax.random.split(step_rng)
    targets = jax.nn.one_hot(y, num_classes)
    if augment is not None:
      x, targets = augment(augment_rng, x, targets)

    def loss_fn(params):
      logits, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, x, train=True,
          trainable_from=options.trainable_from, bn_train=options.bn_train,
          mutable=["batch_stats"], rngs={"dropout": dropout_rng})
      loss = classification_loss(logits, targets, weights=class_weights,
                                 focal_gamma=options.focal_gamma,
                                 label_smoothing=options.label_smoothing).mean()
      return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    correct = jnp.sum(jnp.argmax(logits, -1) == y)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, {"loss": loss, "correct": correct}

  return jax.jit(step, donate_argnums=(0,))


def make_eval_step(model):
  """Returns jit(step)(params, batch_stats, images, batch_index) -> logits (float32)."""

  @jax.jit
  def step(params, batch_stats, images, batch_index):
    return model.apply({"params": params, "batch_stats": batch_stats}, images[batch_index],
                       train=False).astype(jnp.float32)

  return step
