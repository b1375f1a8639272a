"""Train a transfer-learning image classifier: frozen backbone first, then fine-tuning.

  python -m jaxmed.train --config configs/demo.py [--workdir DIR] [--config.KEY=VALUE ...]

Data flows one way: label folders -> split -> decoded uint8 arrays on the device -> compiled
train step (batch gathered by index on the device) -> per-epoch validation -> checkpoints ->
test evaluation -> metrics.jsonl, summary.json and report/ in the workdir.
"""

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

from jaxmed import checkpoint, evaluation, metrics, optim, report, run_info
from jaxmed.data import folder, split
from jaxmed.models import create_model
from jaxmed.models.registry import get_architecture
from jaxmed.progress import Progress, format_seconds
from jaxmed.steps import StepOptions, TrainState, make_eval_step, make_train_step

config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
flags.DEFINE_string("workdir", None, "Output folder; default runs/<config>-<timestamp>.")
FLAGS = flags.FLAGS
log = logging.getLogger("jaxmed")


def say(message: str):
  print(message, flush=True)


# ---------------------------------------------------------------------------------------- data
def load_data(config) -> tuple[list[str], dict[str, folder.Split], dict]:
  """Returns class names, {'train', 'val', 'test'?: Split} and a record of what was loaded."""
  data = config.data
  root = Path(data.root).expanduser()
  if data.get("synthetic", False):
    from jaxmed.data import synthetic
    say("NOTE: this run uses jaxmed's SYNTHETIC phantom dataset (generated, not real patients).")
    synthetic.ensure_demo_dataset(root)
  classes, file_lists = folder.scan(root)
  splits, skipped = {}, []
  for name, files in file_lists.items():
    splits[name], errors = folder.decode_files(files, data.image_size)
    skipped += errors
  if "val" not in splits:  # carve a stratified validation split from train, as Keras' subset=
    keep, held = split.stratified_split(splits["train"].labels, data.val_fraction, config.seed)
    splits["val"] = splits["train"].subset(held)
    splits["train"] = splits["train"].subset(keep)
  record = {"root": str(root), "synthetic": bool(data.get("synthetic", False)),
            "counts": {s: np.bincount(v.labels, minlength=len(classes)).tolist()
                       for s, v in splits.items()},
            "skipped_files": skipped}
  return classes, splits, record


# --------------------------------------------------------------------------------------- model
def init_variables(model, config, image_size: int):
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.uint8)
  # Jitted: eager init of a 150-layer network dispatches op by op and takes 2-3x longer on CPU.
  variables = jax.jit(lambda key: model.init(key, dummy, train=False))(jax.random.PRNGKey(config.seed))
  if config.model.get("weights"):
    from jaxmed.weights import pretrained
    variables = pretrained.load_into(variables, config.model)
  return variables["params"], variables.get("batch_stats", {})


def phase_options(config, name: str, num_stages: int) -> StepOptions:
  phase = config[name]
  if name == "frozen":
    return StepOptions(trainable_from=num_stages, bn_train=False,
                       label_smoothing=config.train.label_smoothing)
  unfreeze = phase.get("unfreeze", "all")
  trainable_from = 0 if unfreeze == "all" else max(0, num_stages - int(unfreeze))
  return StepOptions(trainable_from=trainable_from, bn_train=phase.get("batchnorm", "train") == "train",
                     label_smoothing=config.train.label_smoothing)


# ------------------------------------------------------------------------------------ training
def enable_compilation_cache():
  """JAX's persistent cache: a second run of the same config skips most of its compile time."""
  from jaxmed.paths import cache_dir
  jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def train_and_evaluate(config, workdir: Path) -> dict:
  if config.train.get("compilation_cache", True):
    enable_compilation_cache()
  timings = {"data_s": 0.0, "compile_s": 0.0, "train_s": 0.0, "evaluate_s": 0.0}
  t0 = time.perf_counter()
  classes, splits, data_record = load_data(config)
  for s, counts in data_record["counts"].items():
    say(f"{s:5s}: {sum(counts):5d} images  " + ", ".join(f"{c}={n}" for c, n in zip(classes, counts)))
  if data_record["skipped_files"]:
    say(f"skipped {len(data_record['skipped_files'])} unreadable files (see summary.json)")
  train_split = splits["train"]
  # All splits in one device array: steps gather by index, and one compiled eval step serves all.
  offsets = np.cumsum([0] + [len(v) for v in splits.values()])
  ranges = {name: np.arange(offsets[i], offsets[i + 1], dtype=np.int32)
            for i, name in enumerate(splits)}
  images = jax.device_put(np.concatenate([v.images for v in splits.values()]))
  labels = jax.device_put(np.concatenate([v.labels for v in splits.values()]))
  timings["data_s"] = time.perf_counter() - t0

  arch = get_architecture(config.model.arch)
  model = create_model(config.model, len(classes))
  params, batch_stats = init_variables(model, config, config.data.image_size)
  batch_size = min(config.train.batch_size, len(train_split))
  steps_per_epoch = len(train_split) // batch_size
  eval_batch = config.train.eval_batch_size
  t_compile = time.perf_counter()
  eval_step = make_eval_step(model).lower(
      params, batch_stats, images, np.zeros(eval_batch, np.int32)).compile()
  timings["compile_s"] += time.perf_counter() - t_compile
  ckpt = checkpoint.Checkpoints(workdir, config.train.checkpoint_metric, config.train.checkpoint_mode)
  metrics_file = open(workdir / "metrics.jsonl", "a")
  history, epoch, global_step = [], 0, 0
  total_epochs = config.frozen.epochs + config.finetune.epochs
  rng = jax.random.PRNGKey(config.seed + 1)

  def evaluate(split_name, p, bs) -> dict:
    start = time.perf_counter()
    logits = evaluation.predict_logits(eval_step, p, bs, images, ranges[split_name], eval_batch)
    timings["evaluate_s"] += time.perf_counter() - start
    return evaluation.summarize(logits, splits[split_name].labels, classes)

  for phase in ("frozen", "finetune"):
    epochs = config[phase].epochs
    if epochs <= 0:
      continue
    options = phase_options(config, phase, arch.num_stages)
    labels_tree = optim.param_labels(params, config.model.arch,
                                     None if phase == "frozen" else options.trainable_from)
    tx, schedule = optim.make_optimizer(config[phase], labels_tree, steps_per_epoch)
    state = TrainState(step=jnp.asarray(global_step), params=params, batch_stats=batch_stats,
                       opt_state=tx.init(params), rng=rng)
    t_compile = time.perf_counter()  # ahead-of-time compile, so compile time is reported apart
    train_step = make_train_step(model, tx, options).lower(
        state, images, labels, np.zeros(batch_size, np.int32)).compile()
    timings["compile_s"] += time.perf_counter() - t_compile
    num_trainable = sum(x.size for x, l in zip(jax.tree.leaves(params), jax.tree.leaves(labels_tree))
                        if l == "trainable")
    say(f"phase {phase}: {epochs} epochs x {steps_per_epoch} steps, batch {batch_size}, "
        f"{num_trainable:,} trainable parameters")
    progress = Progress(epochs * steps_per_epoch, batch_size)
    for epoch_in_phase in range(1, epochs + 1):
      epoch += 1
      order = np.random.default_rng([config.seed, epoch]).permutation(ranges["train"])
      t_epoch = time.perf_counter()
      losses, correct = [], []
      for i in range(steps_per_epoch):
        batch_index = order[i * batch_size:(i + 1) * batch_size].astype(np.int32)
        state, step_metrics = train_step(state, images, labels, batch_index)
        losses.append(step_metrics["loss"])
        correct.append(step_metrics["correct"])
        if i % 5 == 0 or i == steps_per_epoch - 1:  # reading the loss waits for the step
          done = (epoch_in_phase - 1) * steps_per_epoch + i + 1
          progress.update(f"epoch {epoch}/{total_epochs} ({phase})", done, float(step_metrics["loss"]))
      train_loss = float(np.mean(jax.device_get(losses)))
      train_acc = float(np.sum(jax.device_get(correct)) / (steps_per_epoch * batch_size))
      timings["train_s"] += time.perf_counter() - t_epoch
      global_step += steps_per_epoch
      progress.newline()
      val = evaluate("val", state.params, state.batch_stats)
      lr = float(schedule(epoch_in_phase * steps_per_epoch - 1))  # at the epoch's last step
      records = [
          {"epoch": epoch, "phase": phase, "split": "train", "loss": train_loss, "accuracy": train_acc,
           "lr": lr, "images_per_s": progress.images_per_second},
          {"epoch": epoch, "phase": phase, "split": "val", "loss": val["loss"],
           "accuracy": val["accuracy"], "macro_f1": val["macro_f1"], "auc": val["auc"]["macro"]}]
      for r in records:
        metrics_file.write(json.dumps(r) + "\n")
      metrics_file.flush()
      history += records
      monitored = {f"val_{k}": val[k] for k in ("accuracy", "loss", "macro_f1")}
      improved = ckpt.save(global_step, state, {"phase": phase, "epoch": epoch}, monitored)
      say(f"epoch {epoch} ({phase}): train loss {train_loss:.4f} acc {train_acc:.3f} | "
          f"val loss {val['loss']:.4f} acc {val['accuracy']:.3f} macro-F1 {val['macro_f1']:.3f}"
          f"{'  *best' if improved else ''}")
    params, batch_stats, rng = state.params, state.batch_stats, state.rng
  ckpt.wait()
  metrics_file.close()
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
  report.write_report(workdir, history, cm, classes)
  say(f"\n{'test' if 'test' in results else 'val'} set ({final['num_examples']} images, "
      f"{config.train.evaluate} checkpoint):\n" + metrics.format_table(final, classes))

  timings["total_s"] = time.perf_counter() - t0
  summary = {
      "classes": classes, **results, "data": data_record,
      "final_params_sha256": final_sha, "evaluated": config.train.evaluate,
      "best": {"metric": ckpt.metric, "value": ckpt.best_value},
      "timings": timings, "versions": run_info.versions(), "machine": run_info.machine(),
      "config": config.to_dict(),
  }
  write_json_atomic(workdir / "summary.json", summary)
  return summary


def write_json_atomic(path: Path, obj):
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, default=str))
  tmp.replace(path)


def prepare_workdir(workdir: str | None, config_path: str) -> Path:
  if workdir is None:
    workdir = Path("runs") / f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
  workdir = Path(workdir)
  if (workdir / "summary.json").exists():
    sys.exit(f"error: {workdir} holds a finished run (summary.json); "
             f"pass another --workdir, or move that folder away first")
  workdir.mkdir(parents=True, exist_ok=True)
  return workdir


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  config = FLAGS.config
  if config is None:
    sys.exit("error: --config is required, e.g. --config configs/demo.py")
  workdir = prepare_workdir(FLAGS.workdir, config_flags.get_config_filename(FLAGS["config"]))
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  say(f"workdir: {workdir}   devices: {jax.devices()}")
  summary = train_and_evaluate(config, workdir)
  split_name = "test" if "test" in summary else "val"
  t = summary["timings"]
  say(f"{split_name} accuracy {summary[split_name]['accuracy']:.4f}  macro-F1 "
      f"{summary[split_name]['macro_f1']:.4f}  | data {format_seconds(t['data_s'])}, compile "
      f"{format_seconds(t['compile_s'])}, train {format_seconds(t['train_s'])}, eval "
      f"{format_seconds(t['evaluate_s'])}, total {format_seconds(t['total_s'])}")
  say(f"wrote {workdir}/summary.json, metrics.jsonl, report/*.png")


if __name__ == "__main__":
  app.run(main)
