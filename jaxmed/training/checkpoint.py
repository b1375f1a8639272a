"""Orbax checkpoints in `workdir/checkpoints/{latest,best}`.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a crash
while saving leaves the previous checkpoint intact; max_to_keep=1 then drops the older one.
Orbax is imported when a checkpoint is first read or written (0.2 s of a run's start otherwise).
"""

import logging
from pathlib import Path

import jax
import numpy as np

from jaxmed.runtime import distributed, import_lock


def orbax():
  with import_lock.IMPORTS:  # imported in a thread while the data is read (training/loop.py)
    import orbax.checkpoint as ocp
  return ocp


def _names(path) -> tuple[str, ...]:
  """A leaf's path as plain names: a TrainState field and a dict key of the same name match."""
  return tuple(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


_LAYOUTS: dict = {}  # tree structure -> [name, dtype, shape] per leaf; a run saves 2-4 structures


def _layout(tree) -> tuple[list, list]:
  """The tree's leaves and, per leaf, [path, dtype name, shape]: computed once per structure,
  because naming the demo's ~600 leaves at each save took a few ms of the loop's thread (under
  cProfile, 2026-12-04: numpy's dtype.name and the path's names most of it)."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  key = (treedef, tuple((type(x), getattr(x, "dtype", None), getattr(x, "shape", None))
                        for x in leaves))
  try:
    return leaves, _LAYOUTS[key]
  except Exception:  # not seen yet, or static fields that cannot be hashed or compared (arrays)
    pass
  layout = [["/".join(_names(path)), np.asarray(leaf).dtype.name, list(np.shape(leaf))]
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
  try:
    _LAYOUTS[key] = layout
    while len(_LAYOUTS) > 8:  # the key holds the train state's static fields (apply_fn, tx)
      del _LAYOUTS[next(iter(_LAYOUTS))]
  except Exception:  # (as above) worked out again at each save
    pass
  return leaves, layout


def pack(tree) -> tuple[dict, list]:
  """The tree's leaves as one flat numpy array per dtype, and the layout to unpack them.

  One owned host copy (orbax writes in the background while the next step donates, i.e. reuses,
  the device buffers), and a handful of arrays instead of hundreds: orbax's cost per save grows
  with the number of arrays (measured 2026-12-02: 170-350 ms of CPU per save of 300 small arrays,
  which on a 2-core machine slowed the next epoch's steps)."""
  leaves, layout = _layout(tree)
  parts = {}
  for leaf, (_, dtype, _) in zip(leaves, layout):
    # a view of a CPU device buffer (a copy from an accelerator); the concatenation copies
    parts.setdefault(dtype, []).append(np.asarray(leaf).reshape(-1))
  return {dtype: np.concatenate(arrays) for dtype, arrays in parts.items()}, layout


def unpack(packed: dict, layout: list) -> dict:
  """{'/'-joined leaf path: numpy array} from pack()'s output."""
  offsets, leaves = dict.fromkeys(packed, 0), {}
  for name, dtype, shape in layout:
    size = int(np.prod(shape, dtype=np.int64))
    start = offsets[dtype]
    leaves[name] = np.asarray(packed[dtype][start:start + size]).reshape(shape)
    offsets[dtype] = start + size
  return leaves


def _fill(like, leaves: dict, where: str):
  """`like`'s structure with each leaf taken from `leaves` by path, placed as like's leaf is."""
  def take(path, leaf):
    name = "/".join(_names(path))
    if name not in leaves or tuple(leaves[name].shape) != tuple(leaf.shape):
      raise ValueError(f"{where}: the checkpoint does not hold {name} {tuple(leaf.shape)}; it "
                       f"was written by another model or config")
    value = leaves[name].astype(leaf.dtype)
    sharding = getattr(leaf, "sharding", None)
    return distributed.put(value, sharding) if sharding is not None else value
  return jax.tree_util.tree_map_with_path(take, like)


class _ReadOnlyNotice(logging.Filter):
  """Drops orbax's warning 'Given directory is read only' (every read-only manager logs it):
  evaluate, predict and export read a workdir on purpose, and the line would only alarm."""

  def filter(self, record) -> bool:
    return not record.getMessage().startswith("Given directory is read only")


def _arrays_uncopied():
  """orbax's type handlers, except that numpy arrays are written as given, not deep-copied first:
  pack() hands orbax arrays that only it holds. With the layout named once (above), a save of the
  demo's 29 MB state went from 21 to 12 ms of the loop's time and from 48 to 39 ms of CPU
  (benchmarks/checkpoint_save.py, 2-core AMD EPYC, 2026-12-04)."""
  th = orbax().type_handlers
  return th.create_type_handler_registry(*[
      (ty, th.NumpyHandler(deepcopy_host_arrays=False) if ty is np.ndarray else th.get_type_handler(ty))
      for ty in th.supported_types()])


def _item_handlers(barriers) -> dict:
  # Stored uncompressed: orbax's default zstd took 54 of a save's 114 ms of CPU for the demo's
  # 29 MB fine-tuning state (benchmarks/checkpoint_save.py, 2-core AMD EPYC, 2026-12-04) to save
  # 8% of the disk, CPU that the steps running beside the background write lost.
  # Readers take both (tensorstore reads the codec from the array's metadata).
  ocp = orbax()
  return {"state": ocp.PyTreeCheckpointHandler(use_compression=False,
                                               multiprocessing_options=barriers,
                                               type_handler_registry=_arrays_uncopied()),
          "meta": ocp.JsonCheckpointHandler(multiprocessing_options=barriers)}


def _options(name: str, read_only: bool):
  # With several processes orbax names its barriers after the step directory; `best` and `latest`
  # save the same step at once and, without a prefix each, collide ('Barrier ... already ongoing').
  ocp = orbax()
  barriers = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)
  if read_only:  # evaluate/predict/export: create nothing in a workdir they only read
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _ReadOnlyNotice) for f in absl_logger.filters):
      absl_logger.addFilter(_ReadOnlyNotice())
    return ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                        save_interval_steps=0,  # else orbax warns it set it
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
    self.root, self.read_only = Path(workdir).absolute() / "checkpoints", read_only
    self.metric, self.mode = metric, mode
    self.best_value = None
    self._managers = {}

  def _manager(self, name: str):
    if name not in self._managers:
      options = _options(name, self.read_only)
      self._managers[name] = orbax().CheckpointManager(
          self.root / name, options=options,
          item_handlers=_item_handlers(options.multiprocessing_options))
    return self._managers[name]

  @property
  def latest(self):
    return self._manager("latest")

  @property
  def best(self):
    return self._manager("best")

  def is_better(self, value: float) -> bool:
    if self.best_value is None:
      return True
    return value > self.best_value if self.mode == "max" else value < self.best_value

  def save_latest(self, step: int, state, meta: dict):
    # best_value rides along so that a run resumed from a mid-epoch checkpoint still knows it.
    ocp = orbax()
    packed, layout = pack(state)
    meta = {**meta, "best_value": self.best_value, "layout": layout}
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(packed), meta=ocp.args.JsonSave(meta)))

  def save(self, step: int, state, meta: dict, metrics: dict) -> bool:
    """Saves `latest`, and `best` when metrics[self.metric] improved. Returns whether it did."""
    value = metrics.get(self.metric)
    improved = value is not None and self.is_better(value)
    if improved:
      ocp = orbax()
      self.best_value = value
      packed, layout = pack({"params": state.params, "batch_stats": state.batch_stats})
      self.best.save(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeSave(packed),
          meta=ocp.args.JsonSave({**meta, **metrics, "layout": layout})))
    self.save_latest(step, state, meta)
    return improved

  def latest_meta(self) -> dict | None:
    """The newest complete checkpoint's metadata (None when there is none): where to resume."""
    latest = self.root / "latest"  # complete steps are folders named by their number
    if not (latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())):
      return None  # a fresh run: no orbax needed yet
    step = self.latest.latest_step()
    if step is None:
      return None
    ocp = orbax()
    return self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def wait(self):
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self):
    for manager in self._managers.values():
      manager.close()


def restore(manager, like) -> tuple[object, dict]:
  """Restores (state, meta) of the manager's newest step into the structure of `like`, which may
  also be part of what was saved: {'params', 'batch_stats'} of a full train state."""
  ocp = orbax()
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{manager.directory}: no checkpoint to restore")
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  if "layout" not in meta:  # written before checkpoints were packed: one array per leaf
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    leaves = ocp.checkpoint_utils.construct_restore_args(abstract)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(abstract, leaves), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta
  state = _fill(like, read_leaves(manager, step, meta), str(manager.directory))
  return state, {k: v for k, v in meta.items() if k != "layout"}


def read_leaves(manager, step: int, meta: dict) -> dict:
  """{'/'-joined leaf path: numpy array} of a packed checkpoint (an orbax CheckpointManager's)."""
  ocp = orbax()
  packed = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore())).state
  return unpack(packed, meta["layout"])
