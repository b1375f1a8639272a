"""Where the time of a small training job goes besides the steps: start-up, compiles, the loop's
host work and the epoch boundaries (issue #17), for three cases in one run.

  python benchmarks/fixed_costs.py [--json FILE] [--cases demo,chest_xray_128,lenet_32] [--repeats 3]

Cases (each a `python -m jaxmed.train` run with the overrides shown in its record):
  demo            configs/demo.py as shipped (synthetic phantoms, MobileNetV2 64 px, 2+10 epochs)
  chest_xray_128  configs/chest_xray.py at 128 px on a fixed subset of
                  ../shared/data/chest_xray_pneumonia/train (first 320 NORMAL + 320 PNEUMONIA
                  files by name for train, the next 64 + 64 for val), 1 frozen + 2 fine-tuning
                  epochs
  lenet_32        the demo's data at 32 px through `lenet` (random init, batch 32, 4 fine-tuning
                  epochs): a launch-bound step that exposes the loop's host overhead

Per case, in a scratch JAXMED_CACHE whose datasets/ and weights/ point at the real ones:
  cold_start_s    process start to the end of the first train step, empty compilation cache
  warm_start_s    the same, run again with the cache the cold run left
  compile_s       per program (summary.json timings.programs) of the warm and the cold run
  step_ms         per phase: median over the warm run's epochs of the epoch's train time / steps,
                  the phase's first epoch timed from the end of its first step (whose one-off
                  costs phase_first_step_s holds, and warm_start_s for the run's first phase, as
                  pure_step_ms leaves out its warm-up steps); step_ms_with_first_step times that
                  epoch whole (the figure before 2026-12-04)
  phase_first_step_s  per phase: its first epoch's start to the end of its first step (the
                  program's first run: XLA's CPU libraries generate kernels, memory is touched)
  pure_step_ms    per phase: the same compiled one-step program (steps_per_dispatch=1) called back
                  to back on the epoch's batches (host indices, as the loop passes them), one sync at the
                  end; median of 3 epochs' worth, in a process with the command line's allocator
  steady_step_ms  per phase: median over the warm run's epochs of the epoch's median time per step
                  between two consecutive reads of the loop (every 5 steps: the device runs the
                  steps between them back to back), reads, progress and mid-epoch checkpoints
                  included, each epoch's start left out (jaxmed.training.phase.read_step_ms);
                  pure_steady_step_ms the same statistic of the back-to-back calls, timed when
                  the same groups of steps are done (after all were dispatched). step_ms /
                  pure_step_ms compares an epoch's mean with a median of 3 passes' means, and on
                  a shared 2-core machine one burst of another process in the loop's single
                  epoch moves it by 0.2-0.4 (2026-12-04); medians of 5-step groups on both sides
                  compare like with like and move less
  in_process_step_ms  per phase: jaxmed's loop itself (Phase._train_epoch, its epoch end left out:
                  validation, metrics, checkpoint) on the same program in the pure-step process,
                  epochs of it alternating with the pure passes; in_process_step_ratio the median
                  of each epoch's ms per step over the pure pass just before it. Paired within
                  seconds, it shows the loop's own per-step cost apart from the noise between
                  processes (not the background threads of a real run, which step_ratio holds)
  val_ms          one validation pass alone (the phase's compiled eval program, warm), median of 3
  epoch_boundary_s  per phase: median over the warm run's epochs of end of last step -> start of
                  the next epoch's first step (validation, metrics, checkpoint included)
  host_ms         per phase: CPU time per step of the thread that runs the loop (its host work:
                  batch indices, dispatch, reads, progress; waiting is not CPU time), median over
                  epochs; pure_host_ms the same for the back-to-back calls; host_overhead_ms the
                  difference, the loop's host work beyond a bare dispatch, which unlike
                  step_overhead_ms does not move with what else shares the cores
  total_s         the warm run's loop: first step to the last epoch's checkpoint written
  ideal_s         sum over phases of steps x pure_step_ms, plus epochs x val_ms (the validation
                  compute); total_s / ideal_s is the loop's fixed-cost factor
  process_s       the warm run's process start to summary.json written (the result)
Every warm figure is the median of --repeats warm runs, each followed by its own pure-step
measurement (the cold run is one: it needs an empty cache); `values` holds the repeats. Records
carry config, metric, value, unit, the machine (CPU model) and versions.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("JAXMED_SHARED", REPO.parent / "shared"))  # ../shared by default
CHEST = SHARED / "data" / "chest_xray_pneumonia"


def cpu_model() -> str:
  for line in Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return platform.processor()


def chest_manifest(path: Path) -> Path:
  """A fixed subset of the shared chest X-ray train split as a jaxmed manifest."""
  from jaxmed.data import manifest
  classes, rows = ["NORMAL", "PNEUMONIA"], []
  for c in classes:
    files = sorted((CHEST / "train" / c).iterdir())
    rows += [{"file": str(f), "label": c, "split": "train"} for f in files[:320]]
    rows += [{"file": str(f), "label": c, "split": "val"} for f in files[320:384]]
  manifest.write(path, classes, rows, source=str(CHEST), method={"benchmark": "fixed_costs"},
                 force=True)
  return path


def case_overrides(name: str, scratch: Path) -> tuple[str, list[str]]:
  if name == "demo":
    return "demo", []
  if name == "chest_xray_128":
    return "chest_xray", [f"--config.data.root={CHEST}",
                          f"--config.data.manifest={chest_manifest(scratch / 'chest.jsonl')}",
                          "--config.data.image_size=128", "--config.frozen.epochs=1",
                          "--config.finetune.epochs=2",
                          # the augmented path, as RESULTS' before/after table was measured (the
                          # config's default is now no augmentation: a cached-feature frozen phase)
                          "--config.augment.preset=xray"]
  if name == "lenet_32":
    return "demo", ["--config.model.arch=lenet", "--config.model.weights=None",
                    "--config.data.image_size=32", "--config.frozen.epochs=0",
                    "--config.finetune.epochs=4"]
  raise SystemExit(f"unknown case {name!r}")


def scratch_cache(root: Path) -> Path:
  """A JAXMED_CACHE with an empty compilation cache, sharing datasets and weights."""
  from jaxmed.runtime.paths import cache_dir
  real = cache_dir()
  root.mkdir(parents=True)
  for sub in ("datasets", "weights"):
    (real / sub).mkdir(parents=True, exist_ok=True)
    (root / sub).symlink_to(real / sub)
  if (real / "xla_flags.json").exists():
    shutil.copy(real / "xla_flags.json", root / "xla_flags.json")
  return root


def train_run(config: str, overrides: list[str], workdir: Path, cache: Path) -> dict:
  """One `python -m jaxmed.train` run; its summary timings plus the start measured from here.
  Python's bytecode cache is on, as in a user's install (pip writes it, and `pip install -e`
  users' Python at the first import); this project's machines set PYTHONDONTWRITEBYTECODE=1,
  which recompiles jaxmed's sources at every start (0.1-0.2 s here)."""
  env = dict(os.environ, JAXMED_CACHE=str(cache))
  env.pop("PYTHONDONTWRITEBYTECODE", None)
  t0 = time.time()
  subprocess.run([sys.executable, "-m", "jaxmed.train", "--config", config, "--workdir",
                  str(workdir), *overrides], check=True, env=env, stdout=subprocess.DEVNULL)
  wall = time.time() - t0
  timings = json.loads((workdir / "summary.json").read_text())["timings"]
  return {**timings, "start_s": timings["first_step_unix"] - t0, "wall_s": wall}


def pure_steps(config: str, overrides: list[str], cache: Path) -> dict:
  """Runs this file with --pure in a fresh process (same cache): pure step and validation times."""
  env = dict(os.environ, JAXMED_CACHE=str(cache))
  out = subprocess.run([sys.executable, __file__, "--pure", config, *overrides], check=True,
                       env=env, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def _pure_pass(phase, batches) -> tuple:
  """One epoch's batches through the one-step program back to back, one sync at the end:
  (ms per step, the dispatching thread's CPU ms per step, the steady ms per step)."""
  import jax
  import numpy as np
  from jaxmed.training.phase import read_step_ms
  t, cpu = time.perf_counter(), time.thread_time()
  metrics = []
  for batch in batches:
    phase.state, m = phase.train_step(phase.state, *batch, np.float32(1.0))
    metrics.append(m)
  marks = []  # when the steps the loop reads together are done: every 5th, and the last
  for end in sorted({*range(5, len(batches) + 1, 5), len(batches)}):
    jax.block_until_ready(metrics[end - 1])  # all dispatched already: the waits delay none
    marks.append((end, time.perf_counter()))
  jax.block_until_ready(phase.state)
  return ((time.perf_counter() - t) / len(batches) * 1e3,
          (time.thread_time() - cpu) / len(batches) * 1e3, read_step_ms(marks))


def _loop_epoch(phase) -> float:
  """One epoch of jaxmed's own loop (Phase._train_epoch: host indices, dispatches, reads every 5
  steps, NaN checks, progress) on the same program, its end (validation, metrics, checkpoint)
  left out; ms per step."""
  phase._end_epoch = lambda *args: None
  before = phase.job.timings["train_s"]
  phase._train_epoch(1)
  return (phase.job.timings["train_s"] - before) / phase.job.steps_per_epoch * 1e3


def measure_pure(config_name: str, overrides: list[str]) -> dict:
  """In this process: each phase's one-step program back to back, alternating with epochs of
  jaxmed's loop on it (the same seconds of a noisy machine for both), and a validation pass."""
  import io
  import jax
  from jaxmed.runtime.cli import parse_config_flags
  from jaxmed.runtime.progress import Progress
  from jaxmed.training import loop
  from jaxmed.training.job import prepare_job
  from jaxmed.training.phase import PHASES, Phase, Position
  config = parse_config_flags(["--config", config_name, *overrides], "fixed_costs").config
  if "steps_per_dispatch" in config.train:
    config.train.steps_per_dispatch = "1"
  config.train.checkpoint_every_steps = 0  # none falls inside these cases' epochs anyway
  loop.enable_compilation_cache()
  job = prepare_job(config)
  # As after the run's first step: no background compiles start, no extra wait is timed.
  job.timings.update(first_step_s=0.0, phase_first_step_s={p: 0.0 for p in PHASES})
  result = {}
  for index, name in enumerate(p for p in PHASES if config[p].epochs > 0):
    phase = Phase(job, name, index, Position(), jax.random.PRNGKey(0), None, None, None, None)
    phase._compile()
    phase.progress = Progress(job.steps_per_epoch, job.batch_size, stream=io.StringIO())
    batches = list(phase.feed.train_batches(1))
    _pure_pass(phase, batches[:3])  # warm-up
    passes, in_loop = [], []
    for _ in range(3):
      passes.append(_pure_pass(phase, batches))
      in_loop.append(_loop_epoch(phase))
    times, host, steady = zip(*passes)
    val = []
    for _ in range(3):
      t = time.perf_counter()
      job.evaluate("val", phase.state.params, phase.state.batch_stats, phase.feed, phase.eval_step)
      val.append((time.perf_counter() - t) * 1e3)
    result[name] = {"pure_step_ms": statistics.median(times), "val_ms": statistics.median(val),
                    "pure_steady_step_ms": statistics.median(steady),
                    "pure_host_ms": statistics.median(host), "steps_per_epoch": job.steps_per_epoch,
                    "in_process_step_ms": statistics.median(in_loop),
                    "in_process_step_ratio": statistics.median(
                        l / p for l, p in zip(in_loop, times))}
    job.params, job.batch_stats = phase.state.params, phase.state.batch_stats
  return result


def _epoch_step_ms(epoch: dict, warm: dict) -> float:
  """The epoch's train time per step; for a phase's first epoch, from the end of the phase's
  first step (a program's first run: its one-off costs are in warm_start_s for the run's first
  phase and in phase_first_step_s for each, as pure_step_ms leaves out its warm-up)."""
  first_steps = warm.get("phase_first_step_s", {})
  if not first_steps and "first_step_in_epoch_s" in warm:  # older runs: the run's first only
    first_steps = {warm["epochs"][0]["phase"]: warm["first_step_in_epoch_s"]}
  first_epoch = next(e for e in warm["epochs"] if e["phase"] == epoch["phase"])
  if epoch is first_epoch and epoch["phase"] in first_steps and epoch["steps"] > 1:
    return (epoch["train_s"] - first_steps[epoch["phase"]]) / (epoch["steps"] - 1) * 1e3
  return epoch["train_s"] / epoch["steps"] * 1e3


def records_for(case: str, config: str, overrides, cold: dict, warm: dict, pure: dict) -> list:
  rows = [("cold_start_s", cold["start_s"], "s"), ("warm_start_s", warm["start_s"], "s"),
          ("cold_compile_s", cold["compile_s"], "s"), ("warm_compile_s", warm["compile_s"], "s")]
  rows += [(f"compile_s[{p}]", v, "s") for p, v in warm["programs"].items()]
  rows += [(f"cold_compile_s[{p}]", v, "s") for p, v in cold["programs"].items()]
  ideal = 0.0
  for phase, p in pure.items():
    epochs = [e for e in warm["epochs"] if e["phase"] == phase]
    step_ms = statistics.median(_epoch_step_ms(e, warm) for e in epochs)
    with_first = statistics.median(e["train_s"] / e["steps"] * 1e3 for e in epochs)
    boundaries = [e["boundary_s"] for e in epochs if "boundary_s" in e]
    rows += [(f"step_ms[{phase}]", step_ms, "ms"), (f"pure_step_ms[{phase}]", p["pure_step_ms"], "ms"),
             (f"step_overhead_ms[{phase}]", step_ms - p["pure_step_ms"], "ms"),
             (f"step_ratio[{phase}]", step_ms / p["pure_step_ms"], "x"),
             (f"step_ms_with_first_step[{phase}]", with_first, "ms"),
             (f"phase_first_step_s[{phase}]", warm.get("phase_first_step_s", {}).get(phase), "s"),
             (f"val_ms[{phase}]", p["val_ms"], "ms")]
    if boundaries:
      rows.append((f"epoch_boundary_s[{phase}]", statistics.median(boundaries), "s"))
    if "in_process_step_ms" in p:
      rows += [(f"in_process_step_ms[{phase}]", p["in_process_step_ms"], "ms"),
               (f"in_process_step_ratio[{phase}]", p["in_process_step_ratio"], "x")]
    steady = [e["read_step_ms"] for e in epochs if e.get("read_step_ms") is not None]
    if steady and "pure_steady_step_ms" in p:  # the same statistic on both sides: see the docstring
      rows += [(f"steady_step_ms[{phase}]", statistics.median(steady), "ms"),
               (f"pure_steady_step_ms[{phase}]", p["pure_steady_step_ms"], "ms"),
               (f"steady_step_ratio[{phase}]", statistics.median(steady) / p["pure_steady_step_ms"],
                "x")]
    host = [e["host_cpu_s"] / e["steps"] * 1e3 for e in epochs if "host_cpu_s" in e]
    if host and "pure_host_ms" in p:  # CPU time of the thread that dispatches: no waits in it
      rows += [(f"host_ms[{phase}]", statistics.median(host), "ms"),
               (f"pure_host_ms[{phase}]", p["pure_host_ms"], "ms"),
               (f"host_overhead_ms[{phase}]", statistics.median(host) - p["pure_host_ms"], "ms")]
    ideal += sum(e["steps"] for e in epochs) * p["pure_step_ms"] / 1e3 + len(epochs) * p["val_ms"] / 1e3
  rows += [("total_s", warm["loop_s"], "s"), ("ideal_s", ideal, "s"),
           ("total_ratio", warm["loop_s"] / ideal, "x"),
           ("after_training_s", warm.get("after_training_s"), "s"),
           ("process_s", warm.get("process_s"), "s"), ("wall_s", warm["wall_s"], "s")]
  return [{"case": case, "config": config, "overrides": overrides, "metric": m, "value": v,
           "unit": u} for m, v, u in rows]


def median_records(repeats: list[list[dict]]) -> list[dict]:
  """One record per metric: the median over the repeats (their values kept in `values`)."""
  merged = {}
  for records in repeats:
    for r in records:
      merged.setdefault(r["metric"], {**r, "values": []})["values"].append(r["value"])
  for r in merged.values():
    present = [v for v in r["values"] if v is not None]
    r["value"] = statistics.median(present) if present else None
  return list(merged.values())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json")
  parser.add_argument("--cases", default="demo,chest_xray_128,lenet_32")
  parser.add_argument("--repeats", type=int, default=3,
                      help="warm runs (and pure-step measurements) per case; medians reported")
  parser.add_argument("--pure", nargs=argparse.REMAINDER)
  args = parser.parse_args()
  if args.pure:
    from jaxmed.runtime.platform import restart_with_fast_allocator
    restart_with_fast_allocator()  # the allocator `python -m jaxmed.train` runs with
    print(json.dumps(measure_pure(args.pure[0], args.pure[1:])))
    return
  from jaxmed.runtime import run_info
  cases = args.cases.split(",")
  if "chest_xray_128" in cases and not CHEST.is_dir():
    print(f"skipping chest_xray_128: {CHEST} not found", file=sys.stderr)
    cases.remove("chest_xray_128")
  records, t_start = [], time.time()
  with tempfile.TemporaryDirectory(prefix="fixed_costs_") as tmp:
    tmp = Path(tmp)
    for case in cases:
      config, overrides = case_overrides(case, tmp)
      cache = scratch_cache(tmp / f"cache_{case}")
      cold = train_run(config, overrides, tmp / f"{case}_cold", cache)
      repeats = []
      for r in range(args.repeats):  # warm runs and pure steps alternate, as the noise comes
        warm = train_run(config, overrides, tmp / f"{case}_warm{r}", cache)
        repeats.append(records_for(case, config, overrides, cold, warm,
                                   pure_steps(config, overrides, cache)))
      records += median_records(repeats)
      print(f"{case}: done ({time.time() - t_start:.0f} s so far)", file=sys.stderr)
  import jax
  context = {"machine": cpu_model(), "cores": os.cpu_count(), "backend": jax.default_backend(),
             "versions": run_info.versions(), "date": datetime.date.today().isoformat(),
             "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
             "python": sys.version.split()[0], "bytecode_cache": True,  # see train_run
             "benchmark_s": time.time() - t_start}
  for r in records:
    r.update(machine=context["machine"], versions=context["versions"])
  print(f"{context['machine']}, {context['cores']} cores, jax {context['versions']['jax']}, "
        f"{context['date']}")
  print(f"{'case':16s} {'metric':32s} {'value':>10s}")
  for r in records:
    value = "-" if r["value"] is None else f"{r['value']:.3f}"
    print(f"{r['case']:16s} {r['metric']:32s} {value:>10s} {r['unit']}")
  if args.json:
    Path(args.json).write_text(json.dumps({"context": context, "records": records}, indent=1))


if __name__ == "__main__":
  main()
