"""Orbax checkpoints in `workdir/checkpoints/{latest,best}`.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a crash
while saving leaves the previous checkpoint intact; max_to_keep=1 then drops the older one.
"""

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


def host_copy(tree):
  """Owned numpy copies: orbax writes in the background while the next step donates (reuses)
  the device buffers, so it must not read them."""
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _options(name: str, read_only: bool) -> ocp.CheckpointManagerOptions:
  # With several processes orbax names its barriers after the step directory; `best` and `latest`
  # save the same step at once and, without a prefix each, collide ('Barrier ... already ongoing').
  barriers = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)
  if read_only:  # evaluate/predict/export: create nothing in a workdir they only read
    return ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                        multiprocessing_options=barriers)
  return ocp.CheckpointManagerOptions(max_to_keep=1, create=True, multiprocessing_options=barriers)


class Checkpoints:
  """The latest full state (every epoch and every N steps, for resuming) and the best model by a
  validation metric.

  The best checkpoint holds only {'params', 'batch_stats'}: the optimizer state differs between
  phases, and evaluation and export need only the model.
  """

  def __init__(self, workdir: str | Path, metric: str = "val_accuracy", mode: str = "max",
               read_only: bool = False):
    if mode not in ("max", "min"):
      raise ValueError(f"checkpoint mode must be 'max' or 'min', got {mode!r}")
    root = Path(workdir).absolute() / "checkpoints"
    self.latest = ocp.CheckpointManager(root / "latest", options=_options("latest", read_only))
    self.best = ocp.CheckpointManager(root / "best", options=_options("best", read_only))
    self.metric, self.mode = metric, mode
    self.best_value = None

  def is_better(self, value: float) -> bool:
    if self.best_value is None:
      return True
    return value > self.best_value if self.mode == "max" else value < self.best_value

  def save_latest(self, step: int, state, meta: dict):
    # best_value rides along so that a run resumed from a mid-epoch checkpoint still knows it.
    meta = {**meta, "best_value": self.best_value}
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(host_copy(state)), meta=ocp.args.JsonSave(meta)))

  def save(self, step: int, state, meta: dict, metrics: dict) -> bool:
    """Saves `latest`, and `best` when metrics[self.metric] improved. Returns whether it did."""
    value = metrics.get(self.metric)
    improved = value is not None and self.is_better(value)
    if improved:
      self.best_value = value
      model = host_copy({"params": state.params, "batch_stats": state.batch_stats})
      self.best.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(model), meta=ocp.args.JsonSave({**meta, **metrics})))
    self.save_latest(step, state, meta)
    return improved

  def latest_meta(self) -> dict | None:
    """The newest complete checkpoint's metadata (None when there is none): where to resume."""
    step = self.latest.latest_step()
    if step is None:
      return None
    return self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def restore(manager: ocp.CheckpointManager, like) -> tuple[object, dict]:
  """Restores (state, meta) of the manager's newest step into the structure of `like`."""
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{manager.directory}: no checkpoint to restore")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return restored.state, restored.meta
