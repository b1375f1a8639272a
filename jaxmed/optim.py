"""Optimizers per training phase, with frozen parameters masked out by `optax.multi_transform`.

Frozen parameters get `optax.set_to_zero()`: no update and no optimizer state (the Adam moments
exist only for the trainable subset), which is what Keras' `trainable=False` means.
"""

import flax.traverse_util
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


def make_optimizer(phase_config, labels, steps_per_epoch: int):
  """(optimizer, learning-rate schedule) for a phase: zero updates on frozen parameters."""
  total = max(1, phase_config.epochs * steps_per_epoch)
  lr = phase_config.learning_rate
  if phase_config.get("schedule", "constant") == "cosine":
    warmup = int(phase_config.get("warmup_epochs", 0) * steps_per_epoch)
    # decay_steps must exceed the warmup, also in runs shorter than the warmup itself.
    lr = optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, max(warmup, 1),
                                            max(total, warmup + 1))
  schedule = lr if callable(lr) else optax.constant_schedule(lr)
  name = phase_config.get("optimizer", "adam")
  if name == "adam":
    inner = optax.adam(lr)
  elif name == "adamw":
    inner = optax.adamw(lr, weight_decay=phase_config.get("weight_decay", 1e-4))
  elif name == "sgd":
    inner = optax.sgd(lr, momentum=phase_config.get("momentum", 0.9), nesterov=True)
  else:
    raise ValueError(f"unknown optimizer {name!r}; one of adam, adamw, sgd")
  tx = optax.multi_transform({"trainable": inner, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
