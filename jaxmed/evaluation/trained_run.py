"""A finished (or checkpointed) run, loaded back from its workdir for evaluation and prediction."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections

from jaxmed.training import checkpoint
from jaxmed.models import create_model


@dataclasses.dataclass
class LoadedRun:
  workdir: Path
  config: ml_collections.ConfigDict
  classes: list[str]
  model: object           # the Classifier (uint8 images in, logits out)
  variables: dict          # {'params', 'batch_stats'}
  image_size: int

  def predict_fn(self):
    """jit(images uint8 (N, H, W, 3)) -> probabilities (N, K)."""
    from jaxmed.evaluation.predictions import softmax_fn
    return softmax_fn(self.model)


def load_run(workdir: str | Path, which: str = "best") -> LoadedRun:
  """Model from `workdir/checkpoints/{best,latest}`, its config and class names."""
  workdir = Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(f"{workdir}: no config.json; is this a jaxmed workdir?")
  if not any((workdir / "checkpoints" / kind).is_dir() for kind in ("best", "latest")):
    raise FileNotFoundError(f"{workdir}: no checkpoint (checkpoints/best or /latest); has this "
                            f"run finished an epoch?")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  classes = _classes(workdir)
  model = create_model(config.model, len(classes))
  size = config.data.image_size
  shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, size, size, 3), jnp.uint8)),
                          jax.random.PRNGKey(0))
  like = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
  like = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like)  # with a device sharding
  ckpt = checkpoint.Checkpoints(workdir, read_only=True)  # creates nothing in the workdir
  try:
    manager = ckpt.best if which == "best" and ckpt.best.latest_step() is not None else ckpt.latest
    if manager.latest_step() is None:
      raise FileNotFoundError(f"{workdir}: no checkpoint in {manager.directory}")
    if manager is ckpt.latest and "layout" not in (ckpt.latest_meta() or {}):
      state, _ = _restore_model_from_latest(manager, like)  # an unpacked full train state
    else:  # the model part of a packed train state, or the best checkpoint
      state, _ = checkpoint.restore(manager, like)
  finally:
    ckpt.close()
  return LoadedRun(workdir, config, classes, model, state, size)


def _classes(workdir: Path) -> list[str]:
  for name in ("summary.json", "classes.json"):
    path = workdir / name
    if path.exists():
      return json.loads(path.read_text())["classes"]
  raise FileNotFoundError(f"{workdir}: neither summary.json nor classes.json names the classes")


def _restore_model_from_latest(manager, like):
  import orbax.checkpoint as ocp
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(), meta=ocp.args.JsonRestore()))
  state = restored.state
  return {"params": state["params"], "batch_stats": state["batch_stats"]}, restored.meta
