"""End-to-end training benchmark on a real label-folder JPEG dataset: jaxmed vs Keras 3 (TF backend)
fed by ImageDataGenerator.flow_from_directory vs Keras 3 fed by a tuned tf.data pipeline.

  python benchmarks/end_to_end.py --json e2e.json     # full default run, ~10 min on 2 cores
  python benchmarks/end_to_end.py --subset 48 --val-subset 16 --size 32 \\
      --frozen-epochs 1 --finetune-epochs 1            # smoke test, ~1.5 min on 2 cores
  options: --data DIR (a folder with <class>/ subfolders; default ../shared/data/
           chest_xray_pneumonia/train) --size 128 --batch 32 --frozen-epochs 2
           --finetune-epochs 3 --target-acc 0.90 --val-fraction 0.15 --seed 0
           --subset N --val-subset N --frameworks jaxmed,keras-flow,keras-tfdata
           --manifest M (train/val from a jaxmed manifest, e.g. a crossval fold's)
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
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e_keras import AUGMENT, EVENT
from e2e_report import fmt, load_average, machine_info, print_tables, summarize, versions
from e2e_split import build_split, jaxmed_view

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest_xray_pneumonia" / "train"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
FRAMEWORKS = ["jaxmed", "keras-flow", "keras-tfdata"]


# ------------------------------------------------------------------------- jaxmed subprocess
JAXMED_CONFIG = '''"""Generated by benchmarks/end_to_end.py: configs/demo.py with the benchmark's protocol."""
import sys
sys.path.insert(0, {repo!r})
from jaxmed.configs import demo


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
  cmd = [sys.executable, str(HERE / "e2e_keras.py"), framework, "--tree", str(tree),
         "--size", str(args.size), "--batch", str(args.batch), "--seed", str(args.seed),
         "--frozen-epochs", str(args.frozen_epochs), "--finetune-epochs",
         str(args.finetune_epochs), "--weights", str(args.weights)]
  rc, wall = run_logged(cmd, env, workdir / "logs" / f"{framework}.log", on_line)
  return {"rc": rc, "wall_s": wall, "epochs": epochs, **info}


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
  p.add_argument("--manifest", type=Path, default=None,
                 help="take train/val from a jaxmed manifest (e.g. a crossval fold's) instead")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--subset", type=int, default=None, help="stratified subset of N train images")
  p.add_argument("--val-subset", type=int, default=None, help="stratified subset of N val images")
  p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
  p.add_argument("--workdir", type=Path, default=None,
                 help="symlink tree, jaxmed run folder and logs (default: a new temp dir; kept)")
  p.add_argument("--json", type=Path, default=None)
  p.add_argument("--cpu", action="store_true", help="JAX_PLATFORMS=cpu for jaxmed")
  p.add_argument("--verbose", action="store_true", help="echo the subprocesses' output")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
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
  split = build_split(args.data, tree, args.val_fraction, args.seed, args.subset, args.val_subset,
                      args.manifest)
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
           "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
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
