"""Everything a training run sets up before its first step: data, devices, feed, model,
initial parameters, class weights, augmentation and the compiled evaluation step."""

import dataclasses
import pickle
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxmed.data.load import list_data, load_data
from jaxmed.evaluation import summary
from jaxmed.models import create_model
from jaxmed.models.registry import compute_dtype, get_architecture
from jaxmed.runtime import distributed
from jaxmed.runtime.cli import UserError
from jaxmed.runtime.distributed import say
from jaxmed.training import input_path, losses, program_cache
from jaxmed.training.compile_ahead import Compiling


@dataclasses.dataclass
class Job:
  config: object
  classes: list[str]
  splits: dict
  data_record: dict
  mesh: object
  replicated: object       # NamedSharding for values every device holds whole
  feed: object             # input_path.ResidentFeed or StreamFeed
  model: object
  num_stages: int          # backbone stages, for `unfreeze` top-N
  params: object
  batch_stats: object
  batch_size: int
  steps_per_epoch: int
  class_weights: object    # np.ndarray or None
  augment: object          # the compiled-in augmenter or None
  eval_step: object        # compiled eval step of `feed` (compile_ahead.Compiling)
  timings: dict
  programs: program_cache.ProgramCache  # compiled programs kept between runs
  program_parts: dict      # what the programs close over besides their arguments (its key)
  # perf_counter() when the last step of the previous epoch was known finished (epoch boundary)
  last_step_end: float | None = None
  train_started: float | None = None  # perf_counter() at this process's first train step
  ahead: dict = dataclasses.field(default_factory=dict)  # name -> compile_ahead.Compiling

  def evaluate(self, split_name: str, params, batch_stats, feed=None, eval_step=None) -> dict:
    """Loss and metrics of one split (`feed`/`eval_step`: a phase's own, e.g. cached features)."""
    start = time.perf_counter()
    logits, labels = (feed or self.feed).predict(eval_step or self.eval_step, split_name, params,
                                                 batch_stats)
    self.timings["evaluate_s"] += time.perf_counter() - start
    return summary.summarize(logits, labels, self.classes)


def init_variables(model, config, image_size: int, programs=None):
  """Parameters and BatchNorm statistics: random for `model.weights=None`, else the weight file's
  backbone with a freshly initialised head (the variables' shapes kept in `programs`, a
  program_cache.ProgramCache, between runs)."""
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.uint8)
  key = jax.random.PRNGKey(config.seed)
  # On the command line `--config.model.weights=None` arrives as the string 'None'.
  if str(config.model.get("weights")).lower() in ("none", ""):
    # Jitted: eager init of a 150-layer network dispatches op by op and takes 2-3x longer on CPU.
    variables = jax.jit(lambda k: model.init(k, dummy, train=False))(key)
    return variables["params"], variables.get("batch_stats", {})
  # The weight file fills the whole backbone, so only the head is initialised: compiling the full
  # init took 8.6 s for the demo's model, its shapes 0.2 s. Flax derives each module's init key
  # from its path, so the head's values equal those of a full model.init with the same seed.
  from jaxmed.models.classifier import Classifier
  from jaxmed.models.preprocess import preprocess
  from jaxmed.weights import pretrained

  def trace_shapes():  # two traces of the whole model: 0.6-0.9 s on a 2-core CPU
    return {"variables": jax.eval_shape(lambda k: model.init(k, dummy, train=False), key),
            "features": jax.eval_shape(lambda k: model.init_with_output(
                k, dummy, method=lambda m, x: m.backbone(preprocess(x, m.preprocessing),
                                                         train=False))[0], key)}

  programs = programs or program_cache.ProgramCache(None)
  traced = programs.shapes("init_shapes", trace_shapes, {
      "model": program_cache.config_part(config)["model"], "image_size": image_size,
      "classes": model.head.num_classes})
  shapes, features = traced["variables"], traced["features"]
  head = jax.jit(lambda k: model.init(k, jnp.zeros(features.shape, features.dtype),
                                      method=Classifier.classify_features))(key)
  variables = {collection: {**tree, **head.get(collection, {})} for collection, tree in shapes.items()}
  try:  # a missing, damaged, unsafe or mismatched weight file: the user's to fix
    variables = pretrained.load_into(variables, config.model)
  except (OSError, ValueError, pickle.UnpicklingError) as e:
    named = str(config.model.weights) in str(e)  # most messages start with the file's path
    raise UserError(str(e) if named else f"model.weights={config.model.weights}: {e}") from e
  leftover = [path for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
              if isinstance(leaf, jax.ShapeDtypeStruct)]
  assert not leftover, f"not initialised: {leftover[:5]}"
  return variables["params"], variables.get("batch_stats", {})


def prepare_job(config) -> Job:
  # compile_s per program in `programs`; `epochs` gives each epoch's train, validation and
  # boundary time (end of its last step to the next epoch's first step, validation included) and
  # host_cpu_s, the training thread's CPU time during its steps (the loop's own host work).
  timings = {"data_s": 0.0, "compile_s": 0.0, "train_s": 0.0, "evaluate_s": 0.0,
             "programs": {}, "epochs": []}
  t0 = time.perf_counter()
  try:  # what goes wrong here is the data's (a missing folder, no train split): the user's to fix
    listed = list_data(config)
    choice = input_path.choose(config.data, listed[1].num_files)
    say(f"input path: {choice['path']} ({choice['reason']})")
    classes, splits, data_record = load_data(config, listed, decode=choice["path"] == "resident")
  except (OSError, ValueError) as e:
    named = str(Path(str(config.data.root)).expanduser()) in str(e)  # the path leads already
    raise UserError(str(e) if named else f"data.root={config.data.root}: {e}") from e
  if len(classes) < 2:
    raise UserError(f"data.root={config.data.root}: found {len(classes)} class "
                    f"({', '.join(classes) or 'none'}); a classifier needs at least 2 class "
                    f"folders (ROOT/train/<class>/...)")
  data_record["input_path"] = choice
  for s, counts in data_record["counts"].items():
    say(f"{s:5s}: {sum(counts):5d} images  " + ", ".join(f"{c}={n}" for c, n in zip(classes, counts)))
  if data_record["skipped_files"]:
    say(f"skipped {len(data_record['skipped_files'])} unreadable files (see summary.json)")
  for warning in data_record.get("warnings", []):  # empty class folders, refused archive members
    say(warning)
  train_split = splits["train"]
  devices = jax.device_count()
  if config.train.batch_size % devices or config.train.eval_batch_size % devices:
    raise UserError(f"train.batch_size {config.train.batch_size} and train.eval_batch_size "
                     f"{config.train.eval_batch_size} must be multiples of the {devices} devices")
  # A train split smaller than the batch trains on one batch of (nearly) all of it: a multiple of
  # the device count, so it still splits evenly.
  batch_size = min(config.train.batch_size, len(train_split) // devices * devices)
  if batch_size == 0:
    raise UserError(f"the train split holds {len(train_split)} images, fewer than the {devices} "
                     f"devices: one image per device at least")
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  replicated = NamedSharding(mesh, P())
  # Resident: all splits on the device, batches gathered there. Stream: batches decoded by a
  # grain pipeline while training. Same batches either way (jaxmed/training/input_path.py).
  feed = input_path.make_feed(choice["path"], splits, mesh, config, batch_size)
  timings["data_s"] = time.perf_counter() - t0

  model = create_model(config.model, len(classes))
  if config.model.get("dtype", "float32") == "auto":
    precision = compute_dtype(config.model)
    say(f"compute dtype: {precision['dtype']} (auto: {precision['reason']})")
  programs = program_cache.for_run(config.train.get("compilation_cache", True), timings)
  params, batch_stats = distributed.put(
      init_variables(model, config, config.data.image_size, programs), replicated)
  train_counts = np.bincount(train_split.labels, minlength=len(classes))
  weights = losses.class_weights(config.train.get("class_weights"), train_counts)
  if weights is not None:
    say("class weights: " + ", ".join(f"{c}={w:.3f}" for c, w in zip(classes, weights)))
  augment = None
  if config.get("augment"):
    from jaxmed.augment import make_augmenter
    augment = make_augmenter(config.augment)
  steps_per_epoch = len(train_split) // batch_size
  parts = {"config": program_cache.config_part(config), "classes": len(classes),
           "feed": type(feed).__name__,
           "class_weights": None if weights is None else np.asarray(weights).tolist(),
           "steps_per_epoch": steps_per_epoch}  # the optimizer's schedule is traced in
  eval_args = (params, batch_stats, *feed.example_eval_batch())
  # Compiled in the background: a frozen phase on cached features needs it only at its end.
  eval_step = Compiling("eval", lambda: programs.compile(
      "eval", lambda: feed.make_eval_step(model), eval_args, parts), timings)
  return Job(config, classes, splits, data_record, mesh, replicated, feed, model,
             get_architecture(config.model.arch).num_stages, params, batch_stats, batch_size,
             steps_per_epoch, weights, augment, eval_step, timings, programs, parts)
