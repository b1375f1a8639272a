"""Keras-style epoch callbacks: reduce-on-plateau (optax's own logic) and early stopping.

Both act once per epoch on a validation metric, on the host, and keep their state as plain
values so it goes into the checkpoint and a resumed run decides exactly as an uninterrupted one.
"""

import dataclasses

import jax
import numpy as np
import optax
from optax import contrib


def _signed(value: float, mode: str) -> float:
  """Both callbacks minimise: a metric to maximise (accuracy, F1, AUC) is negated."""
  return -value if mode == "max" else value


class ReduceLROnPlateau:
  """Keras' ReduceLROnPlateau via `optax.contrib.reduce_on_plateau`, stepped once per epoch.

  The resulting `scale` multiplies every update in the train step (an input, so no recompile).
  """

  def __init__(self, factor=0.2, patience=3, min_scale=0.0, cooldown=0, min_delta=1e-4,
               monitor="val_loss", mode="min"):
    self.monitor, self.mode = monitor, mode
    self.tx = contrib.reduce_on_plateau(factor=factor, patience=patience, rtol=0.0, atol=min_delta,
                                        cooldown=cooldown, accumulation_size=1, min_scale=min_scale)
    self.state = self.tx.init({})

  @property
  def scale(self) -> float:
    return float(self.state.scale)

  def step(self, metrics: dict) -> bool:
    """Feeds one epoch's metric; returns True when the learning rate was just reduced."""
    before = self.scale
    _, self.state = self.tx.update({}, self.state, value=_signed(metrics[self.monitor], self.mode))
    return self.scale < before

  def state_dict(self) -> dict:
    return {k: np.asarray(v).tolist() for k, v in self.state._asdict().items()}

  def load_state_dict(self, d: dict):
    self.state = type(self.state)(**{k: jax.numpy.asarray(v, dtype=np.asarray(getattr(self.state, k)).dtype)
                                     for k, v in d.items()})


@dataclasses.dataclass
class EarlyStopping:
  """Stops after `patience` epochs without an improvement larger than `min_delta`."""
  patience: int = 5
  min_delta: float = 0.0
  monitor: str = "val_loss"
  mode: str = "min"
  best: float | None = None
  wait: int = 0

  def step(self, metrics: dict) -> bool:
    """Feeds one epoch's metric; returns True when training should stop."""
    value = _signed(metrics[self.monitor], self.mode)
    if self.best is None or value < self.best - self.min_delta:
      self.best, self.wait = value, 0
      return False
    self.wait += 1
    return self.wait >= self.patience

  def state_dict(self) -> dict:
    return {"best": self.best, "wait": self.wait}

  def load_state_dict(self, d: dict):
    self.best, self.wait = d["best"], d["wait"]
