"""Train a transfer-learning image classifier: frozen backbone first, then fine-tuning.

  python -m jaxmed.train --config configs/demo.py [--workdir DIR] [--config.KEY=VALUE ...]

Data flows one way: label folders -> split -> decoded uint8 images (on the device when they fit
data.device_memory_budget_mb, else streamed batch by batch; jaxmed/training/input_path.py) -> compiled
train step -> per-epoch validation -> checkpoints -> test evaluation -> metrics.jsonl,
summary.json and report/ in the workdir.
"""

import jaxmed.runtime.platform

if __name__ == "__main__":  # before the heavy imports: the loader reads LD_PRELOAD at process start
  jaxmed.runtime.platform.restart_with_fast_allocator()

import json
import logging
import sys
import time
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

import jaxmed  # noqa: F401  (sets XLA flags before JAX starts its backend)
import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxmed.training import callbacks, checkpoint, input_path, losses, optim
from jaxmed.runtime import distributed, run_info
from jaxmed.evaluation import summary as evaluation, metrics
from jaxmed.reporting import plots as report
from jaxmed.data import discover, folder
from jaxmed.runtime.interrupts import catch_stop_signals
from jaxmed.models import create_model
from jaxmed.models.registry import get_architecture
from tensorboardX import SummaryWriter
from jaxmed.runtime.progress import Progress, format_seconds
from jaxmed.training.steps import StepOptions, TrainState
from jaxmed.training.workdir import check_resumable, prepare_workdir, read_history, write_json_atomic

config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
flags.DEFINE_string("workdir", None, "Output folder; default runs/<config>-<timestamp>.")
flags.DEFINE_bool("distributed", False, "Join the other processes of a multi-host job "
                  "(jax.distributed.initialize; see jaxmed/runtime/distributed.py).")
FLAGS = flags.FLAGS
log = logging.getLogger("jaxmed")


def say(message: str):
  if distributed.is_primary():
    print(message, flush=True)


# ---------------------------------------------------------------------------------------- data
def load_data(config, for_training: bool = False) -> tuple[list[str], dict[str, folder.Split], dict]:
  """Returns class names, {'train', 'val', 'test'?: Split} and a record of what was loaded.

  `data.root` is a folder (label directories at any depth), an archive, a MedMNIST .npz or
  `tfds:NAME`; `data.manifest` pins files, labels and splits; `data.dedupe='cross_split'` drops
  val/test images whose content also occurs in train. `for_training` chooses the input path
  (record['input_path']) and leaves the images undecoded (Split.images None) when it is stream;
  otherwise (evaluation, reports) they are always decoded.
  """
  data = config.data
  root = data.root
  if data.get("synthetic", False):
    from jaxmed.data import synthetic
    say("NOTE: this run uses jaxmed's SYNTHETIC phantom dataset (generated, not real patients).")
    root = str(synthetic.ensure_demo_dataset(Path(data.root).expanduser()))
  spec = str(Path(root).expanduser()) if not str(root).startswith("tfds:") else root
  listing = discover.list_dataset(spec, data.get("manifest"))
  choice = input_path.choose(data, listing.num_files) if for_training else None
  if choice:
    say(f"input path: {choice['path']} ({choice['reason']})")
  classes, splits, record = discover.load_dataset(
      spec, data.image_size, seed=config.seed, val_fraction=data.val_fraction,
      dedupe=data.get("dedupe"), listing=listing, decode=not choice or choice["path"] == "resident")
  record["synthetic"] = bool(data.get("synthetic", False))
  record["input_path"] = choice
  return classes, splits, record


# --------------------------------------------------------------------------------------- model
def init_variables(model, config, image_size: int):
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
  shapes = jax.eval_shape(lambda k: model.init(k, dummy, train=False), key)
  features = jax.eval_shape(lambda k: model.init_with_output(
      k, dummy, method=lambda m, x: m.backbone(preprocess(x, m.preprocessing), train=False))[0], key)
  head = jax.jit(lambda k: model.init(k, jnp.zeros(features.shape, features.dtype),
                                      method=Classifier.classify_features))(key)
  variables = {collection: {**tree, **head.get(collection, {})} for collection, tree in shapes.items()}
  variables = pretrained.load_into(variables, config.model)
  leftover = [path for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
              if isinstance(leaf, jax.ShapeDtypeStruct)]
  assert not leftover, f"not initialised: {leftover[:5]}"
  return variables["params"], variables.get("batch_stats", {})


def phase_options(config, name: str, num_stages: int) -> StepOptions:
  phase = config[name]
  if name == "frozen":
    return StepOptions(trainable_from=num_stages, bn_train=False,
                       label_smoothing=config.train.label_smoothing,
                       focal_gamma=config.train.get("focal_gamma", 0.0))
  unfreeze = phase.get("unfreeze", "all")
  trainable_from = 0 if unfreeze == "all" else max(0, num_stages - int(unfreeze))
  return StepOptions(trainable_from=trainable_from, bn_train=phase.get("batchnorm", "train") == "train",
                     label_smoothing=config.train.label_smoothing,
                     focal_gamma=config.train.get("focal_gamma", 0.0))


# ------------------------------------------------------------------------------------ training
class TrainingDiverged(RuntimeError):
  pass


def enable_compilation_cache():
  """JAX's persistent cache: a second run of the same config skips most of its compile time."""
  from jaxmed.runtime.paths import cache_dir
  jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def make_callbacks(phase_config):
  plateau = early = None
  if phase_config.get("reduce_on_plateau") and phase_config.reduce_on_plateau.enabled:
    p = phase_config.reduce_on_plateau
    plateau = callbacks.ReduceLROnPlateau(p.factor, p.patience, p.get("min_scale", 0.0),
                                          p.get("cooldown", 0), p.get("min_delta", 1e-4),
                                          p.monitor, p.mode)
  if phase_config.get("early_stopping") and phase_config.early_stopping.enabled:
    e = phase_config.early_stopping
    early = callbacks.EarlyStopping(e.patience, e.get("min_delta", 0.0), e.monitor, e.mode)
  return plateau, early


def check_finite(losses, first_step: int, phase: str, epoch: int, ckpt):
  """Raises naming the first step whose loss is NaN/Inf; the last checkpoint stays as it was."""
  values = np.asarray(jax.device_get(losses), np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if len(bad):
    step = first_step + int(bad[0]) + 1
    raise TrainingDiverged(
        f"loss is {values[bad[0]]} at step {step} (epoch {epoch}, phase {phase}). Likely causes: "
        f"learning rate too high for this phase, images that decode to constant or extreme "
        f"values, or mixed precision overflow. The last good checkpoint (step "
        f"{ckpt.latest.latest_step()}) is kept in {ckpt.latest.directory}.")


def add_to_sums(sums, step_losses, step_correct, global_step, phase, epoch, ckpt) -> list:
  """[loss sum, correct, steps] of the epoch so far plus these steps; one device fetch, which
  also checks the losses are finite."""
  losses = np.asarray(jax.device_get(step_losses), np.float64)
  check_finite(losses, global_step - len(losses), phase, epoch, ckpt)
  return [sums[0] + float(losses.sum()), sums[1] + int(np.sum(jax.device_get(step_correct))),
          sums[2] + len(losses)]


def train_and_evaluate(config, workdir: Path) -> dict | None:
  """Runs (or resumes) the whole job; returns the summary, or None when stopped by a signal."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  primary = distributed.is_primary()  # with several processes, process 0 writes the files
  if primary:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  if config.train.get("compilation_cache", True):
    enable_compilation_cache()
  timings = {"data_s": 0.0, "compile_s": 0.0, "train_s": 0.0, "evaluate_s": 0.0}
  t0 = time.perf_counter()
  classes, splits, data_record = load_data(config, for_training=True)
  for s, counts in data_record["counts"].items():
    say(f"{s:5s}: {sum(counts):5d} images  " + ", ".join(f"{c}={n}" for c, n in zip(classes, counts)))
  if data_record["skipped_files"]:
    say(f"skipped {len(data_record['skipped_files'])} unreadable files (see summary.json)")
  if primary:
    write_json_atomic(workdir / "classes.json", {"classes": classes})
  train_split = splits["train"]
  batch_size = min(config.train.batch_size, len(train_split))
  if batch_size % jax.device_count() or config.train.eval_batch_size % jax.device_count():
    raise ValueError(f"train.batch_size {batch_size} and train.eval_batch_size must be multiples "
                     f"of the {jax.device_count()} devices")
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  replicated = NamedSharding(mesh, P())
  # Resident: all splits on the device, batches gathered there. Stream: batches decoded by a
  # grain pipeline while training. Same batches either way (jaxmed/training/input_path.py).
  feed = input_path.make_feed(data_record["input_path"]["path"], splits, mesh, config, batch_size)
  timings["data_s"] = time.perf_counter() - t0

  arch = get_architecture(config.model.arch)
  model = create_model(config.model, len(classes))
  params, batch_stats = distributed.put(init_variables(model, config, config.data.image_size),
                                        replicated)
  steps_per_epoch = len(train_split) // batch_size
  train_counts = np.bincount(train_split.labels, minlength=len(classes))
  weights = losses.class_weights(config.train.get("class_weights"), train_counts)
  if weights is not None:
    say("class weights: " + ", ".join(f"{c}={w:.3f}" for c, w in zip(classes, weights)))
  augment = None
  if config.get("augment"):
    from jaxmed.augment import make_augmenter
    augment = make_augmenter(config.augment)
  t_compile = time.perf_counter()
  eval_step = feed.make_eval_step(model).lower(
      params, batch_stats, *feed.example_eval_batch()).compile()
  timings["compile_s"] += time.perf_counter() - t_compile

  ckpt = checkpoint.Checkpoints(workdir, config.train.checkpoint_metric, config.train.checkpoint_mode)
  resume = ckpt.latest_meta()
  history = read_history(workdir, resume["epoch"] if resume else 0) if primary else []
  if resume:
    say(f"resuming from {ckpt.latest.directory} step {ckpt.latest.latest_step()}: phase "
        f"{resume['phase']}, {resume['epoch']} epochs done, {resume['step_in_epoch']} steps into the next")
    ckpt.best_value = resume.get("best_value")
  metrics_file = distributed.primary_only(lambda: open(workdir / "metrics.jsonl", "a"))
  # `tensorboard --logdir WORKDIR`
  tensorboard = distributed.primary_only(lambda: SummaryWriter(str(workdir / "tensorboard")))
  agree_to_stop = distributed.StopAgreement()  # all processes checkpoint and stop at one step
  epoch, global_step = 0, 0
  rng = jax.random.PRNGKey(config.seed + 1)
  total_epochs = config.frozen.epochs + config.finetune.epochs
  every = config.train.get("checkpoint_every_steps", 0)

  def evaluate(split_name, p, bs, using=None) -> dict:
    start = time.perf_counter()
    phase_feed, phase_eval_step = using or (feed, eval_step)
    logits, labels = phase_feed.predict(phase_eval_step, split_name, p, bs)
    timings["evaluate_s"] += time.perf_counter() - start
    return evaluation.summarize(logits, labels, classes)

  with catch_stop_signals() as stop:
    for phase_index, phase in enumerate(p for p in ("frozen", "finetune") if config[p].epochs > 0):
      if resume and phase_index < resume["phase_index"]:
        continue
      phase_config = config[phase]
      options = phase_options(config, phase, arch.num_stages)
      labels_tree = optim.param_labels(params, config.model.arch,
                                       None if phase == "frozen" else options.trainable_from)
      tx, schedule = optim.make_optimizer(phase_config, labels_tree, steps_per_epoch)
      plateau, early = make_callbacks(phase_config)
      state = distributed.put(TrainState(step=jnp.asarray(global_step), params=params,
                                         batch_stats=batch_stats, opt_state=tx.init(params), rng=rng),
                              replicated)
      start_epoch, start_step, sums, stopped = 1, 0, [0.0, 0, 0], False
      if resume:  # this is the phase the checkpoint was written in
        state, meta = checkpoint.restore(ckpt.latest, state)
        epoch, global_step = meta["epoch"], meta["global_step"]
        start_epoch, start_step = meta["epoch_in_phase"] + 1, meta["step_in_epoch"]
        sums, stopped = meta["train_sums"], meta["stopped"]
        feed.unreadable[:] = meta.get("unreadable_files", [])  # found while streaming so far
        if plateau:
          plateau.load_state_dict(meta["plateau"])
        if early:
          early.load_state_dict(meta["early_stopping"])
        resume = None

      def meta(epoch_in_phase, step_in_epoch, sums, stopped=False):
        return {"phase": phase, "phase_index": phase_index, "epoch": epoch,
                "epoch_in_phase": epoch_in_phase, "step_in_epoch": step_in_epoch,
                "global_step": global_step, "train_sums": sums, "stopped": stopped,
                "plateau": plateau.state_dict() if plateau else None,
                "early_stopping": early.state_dict() if early else None,
                "unreadable_files": feed.unreadable}

      phase_feed, phase_eval_step = feed, eval_step
      if phase == "frozen" and augment is None and config.train.get("cache_features", True) \
          and isinstance(feed, input_path.ResidentFeed):
        # The backbone is fixed for the whole phase: run it once per image, train the head.
        t_features = time.perf_counter()
        phase_feed = input_path.FeatureFeed(feed, model, params, batch_stats)
        phase_eval_step = phase_feed.make_eval_step(model).lower(
            params, batch_stats, *phase_feed.example_eval_batch()).compile()
        timings["features_s"] = time.perf_counter() - t_features
        say(f"phase frozen trains the head on cached backbone features ({phase_feed.nbytes / 2**20:.1f}"
            f" MB, computed in {format_seconds(timings['features_s'])}; train.cache_features)")

      t_compile = time.perf_counter()  # ahead-of-time compile, so compile time is reported apart
      train_step = phase_feed.make_train_step(model, tx, options, weights, augment).lower(
          state, *phase_feed.example_batch(), np.float32(1.0)).compile()
      timings["compile_s"] += time.perf_counter() - t_compile
      num_trainable = sum(x.size for x, l in zip(jax.tree.leaves(params), jax.tree.leaves(labels_tree))
                          if l == "trainable")
      say(f"phase {phase}: {phase_config.epochs} epochs x {steps_per_epoch} steps, batch "
          f"{batch_size}, {num_trainable:,} trainable parameters, {jax.device_count()} device(s)")
      progress = Progress(phase_config.epochs * steps_per_epoch, batch_size,
                          stream=None if primary else distributed.Discard())
      for epoch_in_phase in range(start_epoch, phase_config.epochs + 1):
        if stopped:
          break
        t_epoch = time.perf_counter()
        scale = np.float32(plateau.scale if plateau else 1.0)
        step_losses, step_correct = [], []
        # The epoch's batches from start_step on: the data position saved in each checkpoint.
        for i, batch in enumerate(phase_feed.train_batches(epoch + 1, start_step), start_step):
          state, step_metrics = train_step(state, *batch, scale)
          step_losses.append(step_metrics["loss"])
          step_correct.append(step_metrics["correct"])
          global_step += 1
          if i % 5 == 0 or i == steps_per_epoch - 1:  # reading the loss waits for the step
            check_finite(step_losses[-5:], global_step - min(5, len(step_losses)), phase, epoch + 1, ckpt)
            done = (epoch_in_phase - 1) * steps_per_epoch + i + 1
            progress.update(f"epoch {epoch + 1}/{total_epochs} ({phase})", done,
                            float(step_metrics["loss"]))
          stop_now = agree_to_stop(stop, global_step)
          if stop_now or (every and global_step % every == 0 and i < steps_per_epoch - 1):
            partial = add_to_sums(sums, step_losses, step_correct, global_step, phase, epoch + 1, ckpt)
            ckpt.save_latest(global_step, state, meta(epoch_in_phase - 1, i + 1, partial))
            if stop_now:
              ckpt.wait()
              progress.newline()
              say(f"stopped at step {global_step}; checkpoint saved. Re-run the same command "
                  f"to resume.")
              metrics_file.close()
              tensorboard.close()
              ckpt.close()
              return None
        sums = add_to_sums(sums, step_losses, step_correct, global_step, phase, epoch + 1, ckpt)
        train_loss, train_acc = sums[0] / sums[2], sums[1] / (sums[2] * batch_size)
        epoch_train_s = time.perf_counter() - t_epoch
        timings["train_s"] += epoch_train_s
        epoch += 1
        start_step, sums = 0, [0.0, 0, 0]
        progress.newline()
        t_val = time.perf_counter()
        val = evaluate("val", state.params, state.batch_stats, (phase_feed, phase_eval_step))
        val_s = time.perf_counter() - t_val
        rate = progress.images_per_second  # NaN for a one-step epoch: not valid JSON, so None
        lr = float(schedule(epoch_in_phase * steps_per_epoch - 1)) * float(scale)
        records = [
            {"epoch": epoch, "phase": phase, "split": "train", "loss": train_loss,
             "accuracy": train_acc, "lr": lr, "images_per_s": rate if rate == rate else None,
             "seconds": epoch_train_s},
            {"epoch": epoch, "phase": phase, "split": "val", "loss": val["loss"],
             "accuracy": val["accuracy"], "macro_f1": val["macro_f1"], "auc": val["auc"]["macro"],
             "seconds": val_s}]
        for r in records:
          metrics_file.write(json.dumps(r) + "\n")
          for key, value in r.items():
            if key not in ("epoch", "phase", "split") and value is not None:
              tensorboard.add_scalar(f"{r['split']}/{key}", value, epoch)
        metrics_file.flush()
        tensorboard.flush()
        history += records
        monitored = {f"val_{k}": val[k] for k in ("accuracy", "loss", "macro_f1", "balanced_accuracy")}
        monitored["val_auc"] = val["auc"]["macro"]
        reduced = plateau.step(monitored) if plateau else False
        stopped = early.step(monitored) if early else False
        improved = ckpt.save(global_step, state, meta(epoch_in_phase, 0, sums, stopped), monitored)
        say(f"epoch {epoch} ({phase}): train loss {train_loss:.4f} acc {train_acc:.3f} | "
            f"val loss {val['loss']:.4f} acc {val['accuracy']:.3f} macro-F1 {val['macro_f1']:.3f}"
            f"{'  *best' if improved else ''}{'  lr reduced' if reduced else ''}"
            f"{'  early stop' if stopped else ''}")
      params, batch_stats, rng = state.params, state.batch_stats, state.rng
  ckpt.wait()
  metrics_file.close()
  tensorboard.close()
  final_sha = run_info.params_sha256({"params": params, "batch_stats": batch_stats})

  # Test evaluation on the best checkpoint (Keras' ModelCheckpoint(save_best_only=True) habit)
  # or the last parameters.
  eval_params, eval_stats = params, batch_stats
  if config.train.evaluate == "best" and ckpt.best.latest_step() is not None:
    best, _ = checkpoint.restore(ckpt.best, {"params": params, "batch_stats": batch_stats})
    eval_params, eval_stats = best["params"], best["batch_stats"]
  ckpt.close()
  results = {"val": evaluate("val", eval_params, eval_stats)}
  if "test" in splits and len(splits["test"]):
    results["test"] = evaluate("test", eval_params, eval_stats)
  final = results.get("test", results["val"])
  cm = np.asarray(final["confusion_matrix"])
  if primary:
    report.write_report(workdir, history, cm, classes)
  say(f"\n{'test' if 'test' in results else 'val'} set ({final['num_examples']} images, "
      f"{config.train.evaluate} checkpoint):\n" + metrics.format_table(final, classes))

  timings["total_s"] = time.perf_counter() - t0
  data_record["skipped_files"] += feed.unreadable  # found while streaming (stream path only)
  summary = {
      "classes": classes, **results, "data": data_record,
      "final_params_sha256": final_sha, "evaluated": config.train.evaluate,
      "best": {"metric": ckpt.metric, "value": ckpt.best_value},
      "timings": timings, "versions": run_info.versions(), "machine": run_info.machine(),
      "config": config.to_dict(),
  }
  if primary:
    write_json_atomic(workdir / "summary.json", summary)
  return summary


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  config = FLAGS.config
  if config is None:
    sys.exit("error: --config is required, e.g. --config configs/demo.py")
  distributed.initialize(FLAGS.distributed)
  workdir = prepare_workdir(FLAGS.workdir, config_flags.get_config_filename(FLAGS["config"]))
  check_resumable(workdir, config)
  distributed.barrier("workdir checked")  # before process 0 rewrites config.json
  say(f"workdir: {workdir}   devices: {jax.devices()}")
  try:
    summary = train_and_evaluate(config, workdir)
  except TrainingDiverged as e:
    sys.exit(f"error: {e}")
  if summary is None:  # stopped by SIGTERM / Ctrl-C after saving a checkpoint
    sys.exit(143)
  split_name = "test" if "test" in summary else "val"
  t = summary["timings"]
  say(f"{split_name} accuracy {summary[split_name]['accuracy']:.4f}  macro-F1 "
      f"{summary[split_name]['macro_f1']:.4f}  | data {format_seconds(t['data_s'])}, compile "
      f"{format_seconds(t['compile_s'])}, train {format_seconds(t['train_s'])}, eval "
      f"{format_seconds(t['evaluate_s'])}, total {format_seconds(t['total_s'])}")
  say(f"wrote {workdir}/summary.json, metrics.jsonl, report/*.png")


if __name__ == "__main__":
  app.run(main)
