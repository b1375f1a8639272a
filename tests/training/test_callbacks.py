"""Callbacks act at the right epochs on scripted metric sequences (worked by hand below)."""

import numpy as np
import pytest

from jaxmed.training.callbacks import EarlyStopping, ReduceLROnPlateau
from jaxmed.training.losses import class_weights, classification_loss


def test_reduce_on_plateau_acts_after_patience_epochs():
  # val_loss: improves for 3 epochs, then flat. patience=2 -> epochs 4, 5 flat -> reduce after
  # epoch 5 (scale 0.5); cooldown 0, two more flat epochs (6, 7) -> reduce again after 7 (0.25).
  plateau = ReduceLROnPlateau(factor=0.5, patience=2, monitor="val_loss", mode="min")
  losses = [1.0, 0.8, 0.6, 0.6, 0.6, 0.6, 0.6, 0.5]
  reduced = [plateau.step({"val_loss": v}) for v in losses]
  assert [i + 1 for i, r in enumerate(reduced) if r] == [5, 7]
  assert plateau.scale == pytest.approx(0.25)


def test_reduce_on_plateau_state_round_trips():
  a = ReduceLROnPlateau(factor=0.5, patience=1, monitor="val_accuracy", mode="max")
  for v in (0.5, 0.6, 0.6):
    a.step({"val_accuracy": v})
  b = ReduceLROnPlateau(factor=0.5, patience=1, monitor="val_accuracy", mode="max")
  b.load_state_dict(a.state_dict())
  assert b.scale == a.scale == pytest.approx(0.5)
  assert a.step({"val_accuracy": 0.6}) == b.step({"val_accuracy": 0.6})


def test_early_stopping_epoch_and_min_delta():
  stop = EarlyStopping(patience=3, min_delta=0.01, monitor="val_accuracy", mode="max")
  # 0.705 is not better than 0.70 by more than 0.01 -> counts as no improvement.
  seq = [0.5, 0.7, 0.705, 0.69, 0.70, 0.9]
  stops = [stop.step({"val_accuracy": v}) for v in seq]
  assert stops.index(True) == 4  # epochs 3, 4, 5 without improvement -> stop after epoch 5


def test_balanced_class_weights_and_weighted_loss():
  w = class_weights("balanced", np.array([52, 650]))
  # sklearn: n / (K * count) = 702 / (2 * 52) and 702 / (2 * 650)
  assert w == pytest.approx([702 / 104, 702 / 1300])
  logits = np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)
  onehot = np.eye(2, dtype=np.float32)[[0, 1]]
  plain = np.asarray(classification_loss(logits, onehot))
  weighted = np.asarray(classification_loss(logits, onehot, weights=w))
  assert weighted == pytest.approx(plain * w)
  # by hand: -log softmax([2, 0])[0] = log(1 + e^-2)
  assert plain[0] == pytest.approx(np.log1p(np.exp(-2.0)), rel=1e-6)


def test_focal_loss_down_weights_easy_examples():
  logits = np.array([[4.0, 0.0], [0.2, 0.0]], np.float32)
  onehot = np.eye(2, dtype=np.float32)[[0, 0]]
  ce = np.asarray(classification_loss(logits, onehot))
  focal = np.asarray(classification_loss(logits, onehot, focal_gamma=2.0))
  p = 1 / (1 + np.exp(-np.array([4.0, 0.2])))
  assert focal == pytest.approx(ce * (1 - p) ** 2, rel=1e-5)
  with pytest.raises(ValueError):
    class_weights([1.0], np.array([3, 4]))


def test_optimizer_options_schedules_groups_and_decay_mask():
  import jax
  import jax.numpy as jnp
  import ml_collections
  from jaxmed.training import optim
  params = {"backbone": {"conv": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}},
            "head": {"logits": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}}
  labels = {"backbone": {"conv": {"kernel": "trainable", "bias": "trainable"}},
            "head": {"logits": {"kernel": "trainable", "bias": "trainable"}}}
  grads = jax.tree.map(jnp.zeros_like, params)  # zero gradient: only weight decay moves params
  phase = ml_collections.ConfigDict(dict(epochs=4, learning_rate=0.1, optimizer="sgd",
                                         momentum=0.0, weight_decay=0.5, schedule="step",
                                         step_epochs=2, step_factor=0.1,
                                         backbone_lr_multiplier=0.1))
  tx, schedule = optim.make_optimizer(phase, labels, steps_per_epoch=10)
  assert float(schedule(19)) == pytest.approx(0.1) and float(schedule(20)) == pytest.approx(0.01)
  updates, _ = tx.update(grads, tx.init(params), params)
  # sgd: update = -lr * decay * p on kernels; biases untouched; backbone at lr * 0.1
  assert float(updates["head"]["logits"]["kernel"][0, 0]) == pytest.approx(-0.1 * 0.5)
  assert float(updates["backbone"]["conv"]["kernel"][0, 0]) == pytest.approx(-0.01 * 0.5)
  assert float(jnp.abs(updates["head"]["logits"]["bias"]).max()) == 0.0
  adamax = ml_collections.ConfigDict(dict(epochs=1, learning_rate=1e-3, optimizer="adamax"))
  tx, _ = optim.make_optimizer(adamax, labels, 1)
  tx.update(grads, tx.init(params), params)
