"""End-to-end training benchmark on a real label-folder JPEG dataset: jaxmed vs Keras 3 (TF backend)
fed by ImageDataGenerator.flow_from_directory vs Keras 3 fed by a tuned tf.data pipeline.

  python benchmarks/end_to_end.py --json e2e.json     # full default run, ~10 min on 2 cores
  python benchmarks/end_to_end.py --subset 48 --val-subset 16 --size 32 \\
      --frozen-epochs 1 --finetune-epochs 1            # smoke test, ~1.5 min on 2 cores
  options: --data DIR (a folder with <class>/ subfolders; default ../shared/data/
           chest_xray_pneumonia/train) --size 128 --batch 32 --frozen-epochs 2
           --finetune-epochs 3 --target-acc 0.90 --val-fraction 0.15 --seed 0
           --subset N --val-subset N --frameworks jaxmed,keras-flow,keras-tfdata
           --workdir DIR (kept; default a new temp dir, kept too) --json FILE

What it measures, per framework: wall seconds per epoch (training + validation, input pipeline
included), validation accuracy after each epoch, total wall time of the process, and the time to
first reach --target-acc validation accuracy, both as cumulative epoch seconds and as wall time
since the process was started (the latter includes imports, data loading, weight loading and
compilation, which the frameworks place differently: see "Timing" below).

Data. The images are never copied: a seeded split, stratified by class (--val-fraction of each
class to val), is written as a tree of SYMLINKS WORKDIR/data/{train,val}/<class>/<file> to the
original files, and all three read that same tree (jaxmed discovers train/ and val/ itself and
carves nothing; there is no test/). --subset N / --val-subset N keep a seeded stratified subset
of the train / val part. Before the runs the tree is checked as jaxmed's own discovery sees it
(jaxmed.data.discover.list_dataset, what train.py calls) and each Keras worker reports the files
its loader found (a sha256 over the sorted relative paths and labels), which must all agree.

Model and protocol, identical for all three: Keras Applications MobileNet (v1), alpha 0.25, the
official ImageNet `include_top=False` weights (../shared/weights/mobilenet_2_5_224_tf_no_top.h5),
head GlobalAveragePooling2D + Dense(2) (no hidden layer, no dropout), input --size px, batch 32,
preprocessing x/127.5 - 1 (keras.applications.mobilenet.preprocess_input).
  phase 1: --frozen-epochs epochs, backbone frozen (its BatchNorm in inference mode), Adam 1e-3;
  phase 2: --finetune-epochs epochs, everything trainable, BatchNorm in training mode, Adam 1e-4,
           constant learning rate (Keras: base.trainable = True and a recompile).
  augmentation (training only): rotation 10 deg, width/height shift 0.1, shear 0.1 DEGREES
  (ImageDataGenerator's unit; jaxmed uses the same option names and units), zoom 0.1 (x and y
  drawn independently), horizontal flip, fill 'nearest', bilinear resampling.

The three input pipelines:
  jaxmed        `python -m jaxmed.train` with a generated config (configs/demo.py + overrides):
                images decoded once (Pillow, bilinear resize) into device memory, augmentation
                inside the compiled step. Compilation cache off, so compile time is always paid.
  keras-flow    ImageDataGenerator(preprocessing_function=preprocess_input, <augmentation>)
                .flow_from_directory(train, target_size, batch_size=32, class_mode='sparse',
                seed) and a non-augmenting generator for val (shuffle=False), model.fit(gen,
                validation_data=val_gen): as users write it (default nearest-neighbour resize,
                one worker, every file decoded again every epoch).
  keras-tfdata  tf.data from the file list: read_file + decode_jpeg(channels=3) + tf.image.resize
                (bilinear) as a parallel map, .cache() of the decoded uint8 images, shuffle,
                batch, augmentation with Keras preprocessing layers (RandomRotation(10/360),
                RandomTranslation(0.1, 0.1), RandomShear(x_factor=sin(0.1 deg)), RandomZoom(0.1,
                0.1), RandomFlip('horizontal'), fill 'nearest') + preprocess_input in a batched
                map(num_parallel_calls=AUTOTUNE), prefetch(AUTOTUNE); val the same without
                augmentation. The first epoch decodes and fills the cache.

Each framework runs in its own subprocess (TF and JAX never share a process), one after the
other; this process imports neither. Each subprocess's stdout is read line by line and stamped on
arrival.

Timing. epoch_s is one epoch's training plus validation as each framework brackets it:
  Keras: Callback.on_epoch_begin -> on_epoch_end (after validation). The first epoch of each
         fit() call includes tf.function tracing (reported as first_batch_s: begin -> end of
         the first batch); keras-tfdata's first epoch also decodes every image into the cache.
  jaxmed: from the "phase P:" line (printed after the phase's ahead-of-time compile) or the
         previous "epoch N (P): ..." line to this epoch's line, which train.py prints after
         validation and the epoch checkpoint. Decoding all images and compiling happen before
         the phase line and are reported apart (summary.json timings: data_s, compile_s).
         train.py does not record per-epoch seconds in metrics.jsonl; if a record carries
         `epoch_s` this script uses it instead of the stdout timestamps.
since_start_s is wall time from starting the subprocess to the end of the epoch, so it counts
everything (imports, data, weights, compile); cumulative_s sums epoch_s only.

Output: per-epoch table and summary on stdout; --json FILE holds records {framework, epoch,
phase, epoch_s, cumulative_s, since_start_s, val_accuracy, val_loss, train_accuracy,
train_loss, train_images, val_images, size}, per-framework summaries, the split's file counts,
machine, versions, load averages and date. Logs of each subprocess are kept in WORKDIR/logs/.
"""

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest_xray_pneumonia" / "train"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
FRAMEWORKS = ["jaxmed", "keras-flow", "keras-tfdata"]
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
EVENT = "@@E2E "  # prefix of the Keras workers' event lines

# The augmentation, in ImageDataGenerator's option names and units (shear in degrees).
AUGMENT = dict(rotation_range=10.0, width_shift_range=0.1, height_shift_range=0.1,
               shear_range=0.1, zoom_range=0.1, horizontal_flip=True, fill_mode="nearest")


# ------------------------------------------------------------------------------------ the split
def list_class_files(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
  """Sorted class folder names and (file, label) pairs of the images below each of them."""
  classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
  files = []
  for label, name in enumerate(classes):
    for f in sorted((folder / name).iterdir()):
      if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
        files.append((f, label))
  return classes, files


def stratified_take(labels: list[int], count: int, rng) -> list[int]:
  """`count` indices drawn per class in proportion (largest remainder, >= 1 per class)."""
  import numpy as np
  labels = np.asarray(labels)
  classes = np.unique(labels)
  if count >= len(labels):
    return list(range(len(labels)))
  quota = {c: count * np.mean(labels == c) for c in classes}
  take = {c: max(1, int(math.floor(q))) for c, q in quota.items()}
  for c in sorted(classes, key=lambda c: quota[c] - math.floor(quota[c]), reverse=True):
    if sum(take.values()) >= count:
      break
    take[c] += 1
  out = []
  for c in classes:
    idx = np.flatnonzero(labels == c)
    out += rng.permutation(idx)[:min(take[c], len(idx))].tolist()
  return sorted(out)


def build_split(data: Path, out: Path, val_fraction: float, seed: int, subset: int | None,
                val_subset: int | None) -> dict:
  """Writes out/{train,val}/<class>/ symlinks; returns classes, counts and a digest per split."""
  import numpy as np
  classes, files = list_class_files(data)
  if len(classes) < 2:
    raise SystemExit(f"error: {data}: expected at least 2 class folders, found {classes}")
  rng = np.random.default_rng(seed)
  labels = [l for _, l in files]
  val_idx = []
  for c in range(len(classes)):  # per class round(n * fraction), as jaxmed.data.split does
    idx = [i for i, l in enumerate(labels) if l == c]
    n = min(max(int(round(len(idx) * val_fraction)), 1), len(idx) - 1)
    val_idx += rng.permutation(idx)[:n].tolist()
  val_set = set(val_idx)
  parts = {"train": [files[i] for i in range(len(files)) if i not in val_set],
           "val": [files[i] for i in sorted(val_set)]}
  for name, count in (("train", subset), ("val", val_subset)):
    if count:
      keep = stratified_take([l for _, l in parts[name]], count, rng)
      parts[name] = [parts[name][i] for i in keep]
  if out.exists():
    shutil.rmtree(out)
  info = {"source": str(data), "classes": classes, "counts": {}, "sha256": {}}
  for name, items in parts.items():
    for c in classes:
      (out / name / c).mkdir(parents=True)
    for f, label in items:
      os.symlink(f.resolve(), out / name / classes[label] / f.name)
    info["counts"][name] = {c: sum(1 for _, l in items if l == i) for i, c in enumerate(classes)}
    info["sha256"][name] = files_digest(f"{classes[l]}/{f.name}" for f, l in items)
  info["num_source_files"] = len(files)
  return info


def files_digest(relative_paths) -> str:
  """sha256 over the sorted '<class>/<file name>' strings of one split."""
  return hashlib.sha256("\n".join(sorted(relative_paths)).encode()).hexdigest()[:16]


def jaxmed_view(tree: Path) -> dict:
  """The tree as jaxmed.train will see it (the same discovery call); imports neither JAX nor TF."""
  from jaxmed.data import discover
  listing = discover.list_dataset(str(tree))
  out = {"classes": listing.classes, "splits": sorted(listing.lists), "counts": {}, "sha256": {}}
  for name, fl in listing.lists.items():
    rel = [f"{listing.classes[l]}/{Path(p).name}" for p, l in zip(fl.paths, fl.labels)]
    out["counts"][name] = {c: fl.labels.count(i) for i, c in enumerate(listing.classes)}
    out["sha256"][name] = files_digest(rel)
  return out


# ------------------------------------------------------------------------- jaxmed subprocess
JAXMED_CONFIG = '''"""Generated by benchmarks/end_to_end.py: configs/demo.py with the benchmark's protocol."""
import sys
sys.path.insert(0, {repo!r})
from configs import demo


def get_config():
  c = demo.get_config()
  c.seed = {seed}
  c.data.root = {root!r}
  c.data.synthetic = False
  c.data.image_size = {size}
  c.data.val_fraction = {val_fraction}  # unused: the tree has its own val/
  c.augment = {augment!r}
  c.model.arch = "mobilenet"
  c.model.alpha = 0.25
  c.model.weights = {weights!r}
  c.model.head = dict(pooling="avg", hidden=(), dropout=0.0)
  c.train.batch_size = {batch}
  c.train.compilation_cache = False  # compile time is paid on every run, as Keras' tracing is
  c.train.evaluate = "last"
  c.frozen.epochs = {frozen}
  c.frozen.learning_rate = 1e-3
  c.frozen.optimizer = "adam"
  c.finetune.epochs = {finetune}
  c.finetune.learning_rate = 1e-4
  c.finetune.optimizer = "adam"
  c.finetune.schedule = "constant"
  c.finetune.warmup_epochs = 0
  c.finetune.unfreeze = "all"
  c.finetune.batchnorm = "train"
  return c
'''

PHASE_LINE = re.compile(r"^phase (frozen|finetune): ")
EPOCH_LINE = re.compile(r"^epoch (\d+) \((frozen|finetune)\): train loss ([\d.naninf]+) acc "
                        r"([\d.]+) \| val loss ([\d.naninf]+) acc ([\d.]+)")


def run_logged(cmd, env, log_path: Path, on_line, cwd=None) -> tuple[int, float]:
  """Runs cmd, stamping each line of its merged stdout/stderr on arrival (seconds since start);
  on_line(t, line) sees every line. Returns (exit code, wall seconds)."""
  t0 = time.perf_counter()
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=cwd, text=True, bufsize=1)
    for line in iter(proc.stdout.readline, ""):
      t = time.perf_counter() - t0
      log.write(f"[{t:9.2f}] {line}")
      log.flush()
      on_line(t, line.rstrip("\n"))
    rc = proc.wait()
  return rc, time.perf_counter() - t0


def child_env() -> dict:
  env = dict(os.environ)
  env["PYTHONUNBUFFERED"] = "1"
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def run_jaxmed(args, tree: Path, workdir: Path) -> dict:
  run_dir = workdir / "runs" / "jaxmed"
  if run_dir.exists():
    shutil.rmtree(run_dir)
  config_path = workdir / "jaxmed_e2e_config.py"
  config_path.write_text(JAXMED_CONFIG.format(
      repo=str(REPO), seed=args.seed, root=str(tree), size=args.size, batch=args.batch,
      val_fraction=args.val_fraction, augment=AUGMENT, weights=str(args.weights),
      frozen=args.frozen_epochs, finetune=args.finetune_epochs))
  marks, epochs, counts = {}, [], {}

  def on_line(t, line):
    print(f"  [jaxmed {t:7.1f}s] {line}", flush=True) if args.verbose else None
    m = re.match(r"^(train|val|test)\s*:\s*(\d+) images", line)
    if m:
      counts[m.group(1)] = int(m.group(2))
    if PHASE_LINE.match(line):
      marks[PHASE_LINE.match(line).group(1)] = t
      marks["last"] = t
      marks.setdefault("first_phase", t)
    m = EPOCH_LINE.match(line)
    if m:
      epochs.append({"epoch": int(m.group(1)), "phase": m.group(2), "since_start_s": t,
                     "epoch_s": t - marks["last"], "train_loss": float(m.group(3)),
                     "train_accuracy": float(m.group(4)), "val_loss": float(m.group(5)),
                     "val_accuracy": float(m.group(6))})
      marks["last"] = t

  env = child_env()
  env.setdefault("JAX_PLATFORMS", "cpu") if args.cpu else None
  cmd = [sys.executable, "-m", "jaxmed.train", "--config", str(config_path),
         "--workdir", str(run_dir)]
  rc, wall = run_logged(cmd, env, workdir / "logs" / "jaxmed.log", on_line, cwd=str(REPO))
  result = {"rc": rc, "wall_s": wall, "epochs": epochs, "reported_counts": counts,
            "startup_s": marks.get("first_phase")}
  # Exact numbers from the run's own files (stdout rounds to 3 decimals).
  metrics_path = run_dir / "metrics.jsonl"
  if metrics_path.exists():
    rows = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()]
    by_epoch = {(r["epoch"], r["split"]): r for r in rows}
    for e in epochs:
      val, train = by_epoch.get((e["epoch"], "val")), by_epoch.get((e["epoch"], "train"))
      if val:
        e["val_accuracy"], e["val_loss"] = val["accuracy"], val["loss"]
        if "epoch_s" in val:  # if train.py ever records it, trust it over stdout timestamps
          e["epoch_s"], e["epoch_s_source"] = val["epoch_s"], "metrics.jsonl"
      if train:
        e["train_accuracy"], e["train_loss"] = train["accuracy"], train["loss"]
        if "epoch_s" in train and "epoch_s_source" not in e:
          e["epoch_s"], e["epoch_s_source"] = train["epoch_s"], "metrics.jsonl"
      e.setdefault("epoch_s_source", "stdout timestamps")
  summary_path = run_dir / "summary.json"
  if summary_path.exists():
    summary = json.loads(summary_path.read_text())
    result["timings"] = summary.get("timings")
    data = summary.get("data", {})
    result["data_counts"] = data.get("counts")
    result["skipped_files"] = len(data.get("skipped_files", []))
    result["input_path"] = (data.get("input_path") or {}).get("path")
    result["layout"] = data.get("layout")
  if marks.get("finetune") is not None and marks.get("frozen") is not None:
    last_frozen = [e for e in epochs if e["phase"] == "frozen"]
    if last_frozen:  # between the last frozen epoch line and the finetune phase line
      result["phase_switch_s"] = marks["finetune"] - last_frozen[-1]["since_start_s"]
  return result


# --------------------------------------------------------------------------- Keras subprocesses
def run_keras(args, framework: str, tree: Path, workdir: Path) -> dict:
  epochs, info = [], {}

  def on_line(t, line):
    print(f"  [{framework} {t:7.1f}s] {line}", flush=True) if args.verbose else None
    if not line.startswith(EVENT):
      return
    event = json.loads(line[len(EVENT):])
    kind = event.pop("event")
    if kind == "epoch":
      event["since_start_s"] = t
      event["epoch_s_source"] = "Callback on_epoch_begin/on_epoch_end"
      epochs.append(event)
    elif kind == "files":
      info["files"] = event
    elif kind == "fit_start":
      info.setdefault("startup_s", t)
      info.setdefault("fit_start_since_start_s", []).append(t)
    elif kind == "ready":
      info["ready"] = event

  env = child_env()
  env["KERAS_BACKEND"] = "tensorflow"
  cmd = [sys.executable, str(Path(__file__).resolve()), "--child", framework, "--tree", str(tree),
         "--size", str(args.size), "--batch", str(args.batch), "--seed", str(args.seed),
         "--frozen-epochs", str(args.frozen_epochs), "--finetune-epochs",
         str(args.finetune_epochs), "--weights", str(args.weights)]
  rc, wall = run_logged(cmd, env, workdir / "logs" / f"{framework}.log", on_line)
  return {"rc": rc, "wall_s": wall, "epochs": epochs, **info}


def keras_child(args):
  """Runs in the Keras subprocess (KERAS_BACKEND=tensorflow)."""
  import tensorflow as tf
  import keras
  from keras.applications import mobilenet

  def emit(event, **fields):
    print(EVENT + json.dumps({"event": event, **fields}), flush=True)

  keras.utils.set_random_seed(args.seed)
  size, batch, tree = args.size, args.batch, Path(args.tree)
  t_ready = time.perf_counter()

  if args.child == "keras-flow":
    ImageDataGenerator = tf.keras.preprocessing.image.ImageDataGenerator
    train_gen = ImageDataGenerator(preprocessing_function=mobilenet.preprocess_input, **AUGMENT)
    val_gen = ImageDataGenerator(preprocessing_function=mobilenet.preprocess_input)
    train = train_gen.flow_from_directory(str(tree / "train"), target_size=(size, size),
                                          batch_size=batch, class_mode="sparse", seed=args.seed)
    val = val_gen.flow_from_directory(str(tree / "val"), target_size=(size, size),
                                      batch_size=batch, class_mode="sparse", shuffle=False)
    seen = {}
    for name, it in (("train", train), ("val", val)):
      names = {i: c for c, i in it.class_indices.items()}
      rel = [f"{names[int(l)]}/{Path(p).name}" for p, l in zip(it.filepaths, it.classes)]
      seen[name] = {"count": len(rel), "sha256": files_digest(rel),
                    "classes": [names[i] for i in sorted(names)]}
    steps = {"train": len(train), "val": len(val)}
  else:
    AUTOTUNE = tf.data.AUTOTUNE
    seen, lists = {}, {}
    for name in ("train", "val"):
      classes = sorted(d.name for d in (tree / name).iterdir() if d.is_dir())
      paths, labels = [], []
      for label, c in enumerate(classes):
        for f in sorted((tree / name / c).iterdir()):
          if f.suffix.lower() in IMAGE_EXTENSIONS:
            paths.append(str(f))
            labels.append(label)
      lists[name] = (paths, labels)
      seen[name] = {"count": len(paths), "classes": classes, "sha256": files_digest(
          f"{classes[l]}/{Path(p).name}" for p, l in zip(paths, labels))}

    def load(path, label):
      image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
      image = tf.image.resize(image, (size, size))  # bilinear, float32
      return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    shear = math.sin(math.radians(AUGMENT["shear_range"]))  # ImageDataGenerator's shear matrix
    augment = keras.Sequential([
        keras.layers.RandomRotation(AUGMENT["rotation_range"] / 360.0, fill_mode="nearest",
                                    seed=args.seed),
        keras.layers.RandomTranslation(AUGMENT["height_shift_range"],
                                       AUGMENT["width_shift_range"], fill_mode="nearest",
                                       seed=args.seed + 1),
        keras.layers.RandomShear(x_factor=shear, y_factor=0.0, fill_mode="nearest",
                                 seed=args.seed + 2),
        keras.layers.RandomZoom(AUGMENT["zoom_range"], AUGMENT["zoom_range"],
                                fill_mode="nearest", seed=args.seed + 3),
        keras.layers.RandomFlip("horizontal", seed=args.seed + 4),
    ], name="augment")

    def train_map(images, labels):
      images = augment(tf.cast(images, tf.float32), training=True)
      return mobilenet.preprocess_input(images), labels

    def val_map(images, labels):
      return mobilenet.preprocess_input(tf.cast(images, tf.float32)), labels

    def dataset(name):
      return tf.data.Dataset.from_tensor_slices(lists[name]).map(load, num_parallel_calls=AUTOTUNE)

    n_train = len(lists["train"][0])
    train = (dataset("train").cache().shuffle(n_train, seed=args.seed, reshuffle_each_iteration=True)
             .batch(batch).map(train_map, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE))
    val = (dataset("val").cache().batch(batch).map(val_map, num_parallel_calls=AUTOTUNE)
           .prefetch(AUTOTUNE))
    steps = {"train": math.ceil(n_train / batch), "val": math.ceil(len(lists["val"][0]) / batch)}
  emit("files", **seen, steps=steps)

  t_model = time.perf_counter()
  base = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=0.25, include_top=False,
                                      weights=str(args.weights))
  inputs = keras.Input((size, size, 3))
  x = base(inputs)  # no training=False: BatchNorm trains once the base is unfrozen (phase 2)
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(2, activation="softmax")(x)
  model = keras.Model(inputs, outputs)
  emit("ready", data_s=t_model - t_ready, model_s=time.perf_counter() - t_model)

  class Timer(keras.callbacks.Callback):
    def __init__(self, phase):
      super().__init__()
      self.phase = phase

    def on_epoch_begin(self, epoch, logs=None):
      self.t0, self.first_batch_s, self.batches = time.perf_counter(), None, 0

    def on_train_batch_end(self, batch, logs=None):
      self.batches += 1
      if self.first_batch_s is None:
        self.first_batch_s = time.perf_counter() - self.t0

    def on_epoch_end(self, epoch, logs=None):
      logs = logs or {}
      emit("epoch", epoch=epoch + 1, phase=self.phase, epoch_s=time.perf_counter() - self.t0,
           first_batch_s=self.first_batch_s, steps=self.batches,
           val_accuracy=float(logs.get("val_accuracy", float("nan"))),
           val_loss=float(logs.get("val_loss", float("nan"))),
           train_accuracy=float(logs.get("accuracy", float("nan"))),
           train_loss=float(logs.get("loss", float("nan"))))

  done = 0
  for phase, epochs, lr, trainable in (("frozen", args.frozen_epochs, 1e-3, False),
                                       ("finetune", args.finetune_epochs, 1e-4, True)):
    if epochs <= 0:
      continue
    base.trainable = trainable
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    emit("fit_start", phase=phase)
    model.fit(train, validation_data=val, epochs=done + epochs, initial_epoch=done, verbose=2,
              callbacks=[Timer(phase)])
    done += epochs
  emit("done")


# ------------------------------------------------------------------------------------ reporting
def machine_info() -> dict:
  cpu = ""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  mem = None
  try:
    mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
  except (ValueError, OSError):
    pass
  return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
          "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
          "memory_gib": mem, "python": platform.python_version(), "hostname": platform.node()}


def versions() -> dict:
  out = {}
  for p in ("jax", "jaxlib", "flax", "optax", "keras", "tensorflow", "tensorflow-cpu", "numpy",
            "pillow", "scipy"):
    try:
      out[p] = importlib.metadata.version(p)
    except importlib.metadata.PackageNotFoundError:
      pass
  try:
    out["jaxmed_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True).stdout.strip()
  except OSError:
    pass
  return out


def load_average() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def summarize(framework: str, result: dict, target: float) -> dict:
  epochs = result["epochs"]
  cumulative = 0.0
  for e in epochs:
    cumulative += e["epoch_s"]
    e["cumulative_s"] = cumulative
  reached = next((e for e in epochs if e["val_accuracy"] >= target), None)
  by_phase = {}
  for phase in ("frozen", "finetune"):
    times = [e["epoch_s"] for e in epochs if e["phase"] == phase]
    if times:
      by_phase[phase] = {"first_epoch_s": times[0],
                         "later_epochs_median_s": statistics.median(times[1:]) if len(times) > 1 else None}
  return {
      "framework": framework, "rc": result["rc"], "epochs_done": len(epochs),
      "wall_s": result["wall_s"], "startup_s": result.get("startup_s"),
      "epoch_s_total": cumulative, "per_phase": by_phase,
      # wall time not inside any epoch up to the last one: startup, data, weights, compiles
      "outside_epochs_s": epochs[-1]["since_start_s"] - cumulative if epochs else None,
      "final_val_accuracy": epochs[-1]["val_accuracy"] if epochs else None,
      "best_val_accuracy": max((e["val_accuracy"] for e in epochs), default=None),
      "target_accuracy": target,
      "target_epoch": reached["epoch"] if reached else None,
      "time_to_target_epoch_s": reached["cumulative_s"] if reached else None,
      "time_to_target_since_start_s": reached["since_start_s"] if reached else None,
  }


def fmt(x, spec="7.1f", none="-"):
  return none if x is None else format(x, spec)


def print_tables(summaries: list[dict], records: list[dict]):
  print("\nper epoch (epoch_s: train + validation; cumulative_s: sum of epoch_s; since_start_s: "
        "wall since the process started)")
  print(f"{'framework':13s} {'epoch':>5s} {'phase':8s} {'epoch_s':>8s} {'cum_s':>8s} "
        f"{'start_s':>8s} {'train_acc':>9s} {'val_acc':>8s} {'val_loss':>8s}")
  for r in records:
    print(f"{r['framework']:13s} {r['epoch']:5d} {r['phase']:8s} {fmt(r['epoch_s'], '8.1f')} "
          f"{fmt(r['cumulative_s'], '8.1f')} {fmt(r['since_start_s'], '8.1f')} "
          f"{fmt(r.get('train_accuracy'), '9.4f')} {fmt(r['val_accuracy'], '8.4f')} "
          f"{fmt(r.get('val_loss'), '8.4f')}")
  print("\nsummary (time to target: cumulative epoch seconds / wall seconds since start)")
  print("  startup_s: process start -> first epoch begins; outside_s: all wall time before the "
        "last epoch's end that no epoch_s covers\n  (startup + jaxmed's finetune compile); "
        "1st/med: the phase's first epoch / median of its later epochs")
  print(f"{'framework':13s} {'rc':>3s} {'startup_s':>9s} {'outside_s':>9s} {'frozen 1st/med':>15s} "
        f"{'finetune 1st/med':>17s} {'total_s':>8s} {'best_val':>8s} {'target':>22s}")
  for s in summaries:
    ph = s["per_phase"]

    def pair(p):
      return (f"{fmt(ph[p]['first_epoch_s'], '.1f')}/{fmt(ph[p]['later_epochs_median_s'], '.1f')}"
              if p in ph else "-")

    tgt = (f"ep {s['target_epoch']}: {s['time_to_target_epoch_s']:.1f}/"
           f"{s['time_to_target_since_start_s']:.1f}" if s["target_epoch"] else "not reached")
    print(f"{s['framework']:13s} {s['rc']:3d} {fmt(s['startup_s'], '9.1f')} "
          f"{fmt(s['outside_epochs_s'], '9.1f')} {pair('frozen'):>15s} "
          f"{pair('finetune'):>17s} {s['wall_s']:8.1f} {fmt(s['best_val_accuracy'], '8.4f')} "
          f"{tgt:>22s}")


# ----------------------------------------------------------------------------------------- main
def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                 help="folder of <class>/ subfolders of images (default: %(default)s)")
  p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--frozen-epochs", type=int, default=2)
  p.add_argument("--finetune-epochs", type=int, default=3)
  p.add_argument("--target-acc", type=float, default=0.90)
  p.add_argument("--val-fraction", type=float, default=0.15)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--subset", type=int, default=None, help="stratified subset of N train images")
  p.add_argument("--val-subset", type=int, default=None, help="stratified subset of N val images")
  p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
  p.add_argument("--workdir", type=Path, default=None,
                 help="symlink tree, jaxmed run folder and logs (default: a new temp dir; kept)")
  p.add_argument("--json", type=Path, default=None)
  p.add_argument("--cpu", action="store_true", help="JAX_PLATFORMS=cpu for jaxmed")
  p.add_argument("--verbose", action="store_true", help="echo the subprocesses' output")
  p.add_argument("--child", choices=["keras-flow", "keras-tfdata"], help=argparse.SUPPRESS)
  p.add_argument("--tree", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.child:
    return keras_child(args)
  frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
  unknown = sorted(set(frameworks) - set(FRAMEWORKS))
  if unknown:
    raise SystemExit(f"error: unknown framework(s) {unknown}; known: {FRAMEWORKS}")
  if not args.data.is_dir():
    raise SystemExit(f"error: {args.data}: dataset folder not found")
  if not args.weights.is_file():
    raise SystemExit(f"error: {args.weights}: weight file not found")
  args.weights = args.weights.resolve()
  workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="jaxmed-e2e-"))).resolve()
  (workdir / "logs").mkdir(parents=True, exist_ok=True)
  tree = workdir / "data"
  started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  split = build_split(args.data, tree, args.val_fraction, args.seed, args.subset, args.val_subset)
  seen_by_jaxmed = jaxmed_view(tree)
  print(f"workdir {workdir}\nsplit of {split['source']} ({split['num_source_files']} images): "
        + "; ".join(f"{s} " + ", ".join(f"{c}={n}" for c, n in cnt.items())
                    for s, cnt in split["counts"].items()))
  if seen_by_jaxmed["sha256"] != split["sha256"] or seen_by_jaxmed["splits"] != ["train", "val"]:
    raise SystemExit(f"error: jaxmed's discovery sees another split: {seen_by_jaxmed}")
  train_images = sum(split["counts"]["train"].values())
  val_images = sum(split["counts"]["val"].values())

  results, summaries, records, loads, problems = {}, [], [], {"start": load_average()}, []
  for fw in frameworks:
    print(f"\n== {fw} (load average {' '.join(map(str, load_average()))}) ...", flush=True)
    loads[f"{fw}_before"] = load_average()
    result = run_jaxmed(args, tree, workdir) if fw == "jaxmed" else run_keras(args, fw, tree, workdir)
    loads[f"{fw}_after"] = load_average()
    results[fw] = result
    s = summarize(fw, result, args.target_acc)
    summaries.append(s)
    for e in result["epochs"]:
      records.append({"framework": fw, "train_images": train_images, "val_images": val_images,
                      "size": args.size, **e})
    # Did it read exactly the split?
    if fw == "jaxmed":
      counts = result.get("data_counts") or {}
      got = {k: sum(v) for k, v in counts.items()}
      if got != {"train": train_images, "val": val_images} or result.get("skipped_files"):
        problems.append(f"jaxmed loaded {got} (skipped {result.get('skipped_files')}), "
                        f"expected train {train_images}, val {val_images}")
    else:
      files = result.get("files", {})
      for name in ("train", "val"):
        if files.get(name, {}).get("sha256") != split["sha256"][name]:
          problems.append(f"{fw} {name}: files differ from the split ({files.get(name)})")
    if result["rc"] != 0:
      problems.append(f"{fw} exited with {result['rc']}; see {workdir}/logs/{fw}.log")
    expected = args.frozen_epochs + args.finetune_epochs
    if len(result["epochs"]) != expected:
      problems.append(f"{fw}: {len(result['epochs'])} epochs recorded, expected {expected}")
    print(f"   done in {result['wall_s']:.1f} s, {len(result['epochs'])} epochs, rc {result['rc']}",
          flush=True)
  loads["end"] = load_average()

  print_tables(summaries, records)
  print(f"\ndata: train {train_images}, val {val_images} images ({split['counts']}), "
        f"{args.size} px, batch {args.batch}; same files for all: "
        f"{'yes' if not any('files differ' in p or 'loaded' in p for p in problems) else 'NO'}")
  if "jaxmed" in results:
    t = results["jaxmed"].get("timings") or {}
    print(f"jaxmed overheads: data {fmt(t.get('data_s'), '.1f')} s (decode all images), compile "
          f"{fmt(t.get('compile_s'), '.1f')} s (both phases), input path "
          f"{results['jaxmed'].get('input_path')}; epoch seconds from "
          f"{results['jaxmed']['epochs'][0]['epoch_s_source'] if results['jaxmed']['epochs'] else '-'}")
  for fw in ("keras-flow", "keras-tfdata"):
    if fw in results and results[fw]["epochs"]:
      firsts = ", ".join(f"{e['phase']} {e['first_batch_s']:.1f} s" for e in results[fw]["epochs"]
                         if e["first_batch_s"] is not None and
                         e["epoch"] in (1, args.frozen_epochs + 1))
      print(f"{fw}: first batch of each fit() (tracing): {firsts}; steps per epoch "
            f"{results[fw]['epochs'][0]['steps']}")
  print(f"load average: {loads}")
  for p in problems:
    print(f"PROBLEM: {p}")

  if args.json:
    out = {"date": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "command": " ".join([sys.executable, *sys.argv]),
           "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    if k not in ("child", "tree")},
           "machine": machine_info(), "versions": versions(), "load_average": loads,
           "split": split, "augment": AUGMENT, "workdir": str(workdir),
           "records": records, "summaries": summaries,
           "details": {fw: {k: v for k, v in r.items() if k != "epochs"} for fw, r in results.items()},
           "problems": problems}
    args.json.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.json}")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
