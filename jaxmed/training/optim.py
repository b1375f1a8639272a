"""Optimizers per training phase, with frozen parameters masked out by `optax.multi_transform`.

Frozen parameters get `optax.set_to_zero()`: no update and no optimizer state (the Adam moments
exist only for the trainable subset), which is what Keras' `trainable=False` means.
"""

import flax.traverse_util
import jax
import optax

from jaxmed.models.registry import param_stage


def param_labels(params, arch: str, trainable_from: int | None) -> dict:
  """'trainable' / 'frozen' per parameter. `trainable_from=None` freezes the whole backbone."""
  flat = flax.traverse_util.flatten_dict(params)
  labels = {}
  for path in flat:
    stage = param_stage(arch, path)
    frozen = stage is not None and (trainable_from is None or stage < trainable_from)
    labels[path] = "frozen" if frozen else "trainable"
  return flax.traverse_util.unflatten_dict(labels)


def make_schedule(phase_config, steps_per_epoch: int):
  """constant | cosine (with linear warmup) | step (x `step_factor` every `step_epochs`)."""
  total = max(1, phase_config.epochs * steps_per_epoch)
  lr = phase_config.learning_rate
  kind = phase_config.get("schedule", "constant")
  warmup = int(phase_config.get("warmup_epochs", 0) * steps_per_epoch)
  if kind == "cosine":
    # decay_steps must exceed the warmup, also in runs shorter than the warmup itself.
    return optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, max(warmup, 1),
                                              max(total, warmup + 1))
  if kind == "step":
    every = max(1, int(phase_config.get("step_epochs", 3) * steps_per_epoch))
    return optax.exponential_decay(lr, every, phase_config.get("step_factor", 0.1), staircase=True)
  if kind == "constant":
    return optax.constant_schedule(lr)
  raise ValueError(f"unknown schedule {kind!r}; one of constant, cosine, step")


def decay_mask(params):
  """True for kernels only: weight decay skips biases and BatchNorm scales/offsets (1-D leaves)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(phase_config, labels, steps_per_epoch: int):
  """(optimizer, learning-rate schedule) for a phase: zero updates on frozen parameters.

  `backbone_lr_multiplier` gives the fine-tuned backbone its own rate relative to the head (one
  learning rate per parameter group); weight decay (adamw, sgd) never touches biases and norms.
  """
  schedule = make_schedule(phase_config, steps_per_epoch)
  name = phase_config.get("optimizer", "adam")
  decay = phase_config.get("weight_decay", 0.0)

  def optimizer(lr):
    if name == "adam":
      return optax.adam(lr)
    if name == "adamax":
      return optax.adamax(lr)
    if name == "adamw":
      return optax.adamw(lr, weight_decay=decay or 1e-4, mask=decay_mask)
    if name == "sgd":
      sgd = optax.sgd(lr, momentum=phase_config.get("momentum", 0.9), nesterov=True)
      return optax.chain(optax.add_decayed_weights(decay, mask=decay_mask), sgd) if decay else sgd
    raise ValueError(f"unknown optimizer {name!r}; one of adam, adamax, adamw, sgd")

  multiplier = phase_config.get("backbone_lr_multiplier", 1.0)
  transforms = {"trainable": optimizer(schedule), "frozen": optax.set_to_zero()}
  if multiplier != 1.0:
    labels = jax.tree_util.tree_map_with_path(
        lambda path, label: "backbone" if label == "trainable" and path[0].key == "backbone"
        else label, labels)
    transforms["backbone"] = optimizer(lambda step: schedule(step) * multiplier)
  tx = optax.multi_transform(transforms, labels)
  return tx, schedule
