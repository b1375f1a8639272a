"""The compiled train and eval steps. The dataset lives on the device; a step receives batch
indices and gathers its images there, so steady-state training moves no image data from the host."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


@flax.struct.dataclass
class StepOptions:
  """Static per-phase choices: which backbone stages train and how BatchNorm behaves."""
  trainable_from: int = flax.struct.field(pytree_node=False, default=0)
  bn_train: bool = flax.struct.field(pytree_node=False, default=True)
  label_smoothing: float = flax.struct.field(pytree_node=False, default=0.0)


def cross_entropy(logits, labels, num_classes, smoothing=0.0):
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing) if smoothing else \
      jax.nn.one_hot(labels, num_classes)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def make_train_step(model, tx, options: StepOptions):
  """Returns jit(step)(state, images, labels, batch_index) -> (state, metrics); state is donated."""
  num_classes = model.head.num_classes

  def step(state: TrainState, images, labels, batch_index):
    x, y = images[batch_index], labels[batch_index]
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      logits, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, x, train=True,
          trainable_from=options.trainable_from, bn_train=options.bn_train,
          mutable=["batch_stats"], rngs={"dropout": dropout_rng})
      loss = cross_entropy(logits, y, num_classes, options.label_smoothing).mean()
      return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
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

