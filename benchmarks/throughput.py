"""Training-step throughput: jaxmed vs Keras 3 (TensorFlow backend, and JAX backend), CPU.

  python benchmarks/throughput.py [--quick] [--json FILE] [--repeats N]
                                  [--models M,..] [--sizes S,..] [--phases P,..] [--frameworks F,..]
                                  [--configs model:size:phase,..]

One training step (float32 unless a row says bfloat16) = forward + backward + Adam update on a
batch of 32 random images (4 classes), head GAP + Dense(4), weights=None (random init: the speed does not depend on the values).
Phases: `finetune` (everything trains, BatchNorm in training mode) and `frozen` (backbone frozen,
BatchNorm in inference mode, only the head trains: Keras `base_model.trainable=False` +
`base_model(x, training=False)`; jaxmed StepOptions(trainable_from=num_stages, bn_train=False)
with optim.param_labels(..., None)).

Each framework runs in its own subprocess (benchmarks/_worker.py). For one (model, size, phase)
the workers are set up one after another (so compile times are not contended), then timed
windows are taken round-robin (jaxmed, keras-tf, keras-jax, jaxmed, ...) so that noise on a
shared machine hits all frameworks alike. img/s is the median over the windows.

  jaxmed: jaxmed.training.steps.make_train_step, AOT-compiled (compile_s = lower + compile); the images
          live on the device (uint8) and each step gathers all 32 of them by index.
  keras:  model.compile(Adam(1e-3), SparseCategoricalCrossentropy(from_logits=True)) with the
          default jit_compile='auto' (TF on CPU: tf.function without XLA; JAX: jax.jit), timed by
          model.train_on_batch(float32 numpy images, labels); compile_s = the first
          train_on_batch (trace + compile + one step). train_on_batch returns the loss as a number,
          so it waits for every step; jaxmed's loop is asynchronous and waits at the window's end.

GFLOP/s: FLOPs per step from XLA's cost analysis of jaxmed's compiled step; the Keras rows reuse
jaxmed's count for the same model/size/phase (same architecture). Peak: numpy float32 matrix
product (2048^3) GFLOP/s measured in this process at the start and end of the run.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_worker.py"
FRAMEWORKS = ["jaxmed", "keras-tensorflow", "keras-jax"]
# jaxmed runs with `model.dtype='auto'`, the default a user gets (bfloat16 where the CPU's matrix
# unit pays, float32 elsewhere; each record's info says which and why).
# Opt in via --frameworks. jaxmed-bf16: the same step with `model.dtype=bfloat16` (float32
# params). jaxmed's command line picks its host allocator (jaxmed/runtime/platform.py: mimalloc when
# installed, else glibc's huge-page tunable); these show what that choice gives each side:
# jaxmed-glibc (JAXMED_ALLOCATOR=glibc), jaxmed-nohugepages (JAXMED_ALLOCATOR=system: plain glibc),
# keras-tensorflow-hugepages (Keras-TF with the glibc tunable), keras-tensorflow-mimalloc (Keras-TF
# with jaxmed's mimalloc preload and options).
# keras-tensorflow-bf16: Keras' `mixed_bfloat16` policy (bfloat16 compute, float32 variables), the
# switch a Keras user flips for mixed precision; on a CPU with a matrix unit it is in the defaults.
OPTIONAL = ["jaxmed-bf16", "jaxmed-glibc", "jaxmed-nohugepages", "keras-tensorflow-hugepages",
            "keras-tensorflow-mimalloc", "keras-tensorflow-bf16"]
SHORT = {"jaxmed": "jaxmed", "keras-tensorflow": "keras-tf", "keras-jax": "keras-jax",
         "jaxmed-bf16": "jaxmed-bf16", "jaxmed-glibc": "jaxmed-glibc",
         "jaxmed-nohugepages": "jaxmed-nohp", "keras-tensorflow-hugepages": "keras-tf-hp",
         "keras-tensorflow-mimalloc": "keras-tf-mi", "keras-tensorflow-bf16": "keras-tf-bf16"}
JAXMED_ALLOCATOR = {"jaxmed-glibc": "glibc", "jaxmed-nohugepages": "system"}
HUGEPAGES = "glibc.malloc.hugetlb=1"
MODELS = ["mobilenet", "mobilenet_v2", "resnet50v2"]


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
  """Best-of-`reps` numpy float32 n x n x n matrix product, GFLOP/s (all cores)."""
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32)
  a @ b
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best / 1e9


def matrix_unit_figures() -> dict:
  """The CPU's matrix-unit flags and jax's float32/bfloat16 product GFLOP/s, measured in a child
  process (jaxmed/runtime/matrix_units.py, not cached) so this parent never starts XLA."""
  code = ("import json; from jaxmed.runtime import matrix_units; "
          "print(json.dumps(matrix_units.probe(cache=False)))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=str(HERE.parent))
  return json.loads(out.stdout.strip().splitlines()[-1])


def load_average() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def mimalloc_environment(env: dict) -> dict:
  """`env` with the mimalloc preload jaxmed's own processes get (jaxmed/runtime/platform.py)."""
  from _worker import jaxmed_platform
  platform_module = jaxmed_platform()
  library = platform_module.mimalloc_library()
  if library is None:
    raise SystemExit("keras-tensorflow-mimalloc needs the cmeel-mimalloc package (pip install "
                     "cmeel-mimalloc)")
  return platform_module.mimalloc_environment(env, library)


class Worker:
  def __init__(self, framework: str, model: str, size: int, phase: str, batch: int, log):
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    worker_framework = framework
    if framework.startswith("keras-"):
      env["KERAS_BACKEND"] = framework.split("-")[1]
      if framework.endswith("-hugepages"):
        worker_framework = framework.removesuffix("-hugepages")
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), HUGEPAGES]))
      if framework.endswith("-mimalloc"):
        worker_framework = framework.removesuffix("-mimalloc")
        env = mimalloc_environment(env)
      if framework.endswith("-bf16"):
        worker_framework = framework  # the worker sets the mixed_bfloat16 policy
    if framework in JAXMED_ALLOCATOR:
      worker_framework = "jaxmed"
      env["JAXMED_ALLOCATOR"] = JAXMED_ALLOCATOR[framework]
    self.framework = framework
    self.proc = subprocess.Popen(
        [sys.executable, str(WORKER), worker_framework, model, str(size), phase, "--batch", str(batch)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        cwd=str(HERE.parent))
    self.setup = self._read()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"{self.framework} worker exited (code {self.proc.wait()}); see the log")
    return json.loads(line)

  def ask(self, request: dict) -> dict:
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    try:
      self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
      self.proc.stdin.close()
    except BrokenPipeError:
      pass
    self.proc.wait(timeout=60)


def bench_config(model, size, phase, frameworks, args, log, peak_gflops):
  batch = args.batch
  workers, records = {}, []
  for fw in frameworks:
    t0 = time.perf_counter()
    print(f"  setting up {fw} ...", end="", flush=True)
    try:
      workers[fw] = Worker(fw, model, size, phase, batch, log)
    except Exception as e:  # noqa: BLE001  (one failing framework must not lose the others)
      print(f" FAILED: {e}")
      continue
    s = workers[fw].setup
    dtype = f", {s['info']['dtype']}" if "dtype" in s["info"] else ""  # jaxmed's resolved dtype
    print(f" {time.perf_counter() - t0:.0f}s (compile {s['compile_s']:.1f}s, "
          f"step {s['warm_step_s']:.2f}s{dtype})")
  if not workers:
    return records
  # Steps per window: ~args.window_s of work, from the slowest warm-up step, same for all.
  slowest = max(w.setup["warm_step_s"] for w in workers.values())
  steps = int(min(args.max_steps, max(1, round(args.window_s / slowest))))
  times = {fw: [] for fw in workers}
  for r in range(args.repeats):
    for fw, w in workers.items():
      times[fw].append(w.ask({"steps": steps})["seconds"])
  flops = workers["jaxmed"].setup["flops"] if "jaxmed" in workers else None
  for fw, w in workers.items():
    rss = w.ask({"cmd": "rss"})["peak_rss_mb"]
    w.close()
    rates = [steps * batch / t for t in times[fw]]
    med = statistics.median(rates)
    step_s = batch / med
    gflops = flops / step_s / 1e9 if flops else None
    records.append({
        "framework": fw, "model": model, "size": size, "phase": phase, "batch": batch,
        "img_per_s": med, "img_per_s_min": min(rates), "img_per_s_max": max(rates),
        "img_per_s_all": rates, "step_ms": step_s * 1e3, "steps_per_window": steps,
        "repeats": args.repeats, "compile_s": w.setup["compile_s"],
        "first_step_s": w.setup["first_step_s"], "setup_s": w.setup["setup_s"],
        "peak_rss_mb": rss, "flops_per_step": flops,
        "flops_source": ("xla cost analysis (jaxmed step)" if fw == "jaxmed"
                         else "jaxmed's count for the same model/size/phase") if flops else None,
        "gflops_per_s": gflops,
        "pct_of_matmul_peak": 100 * gflops / peak_gflops if gflops and peak_gflops else None,
        "trainable_params": w.setup["trainable_params"], "info": w.setup["info"]})
  return records


def fmt(x, spec):
  return format(x, spec) if x is not None else "-"


def print_table(records, peak):
  keyed = {(r["model"], r["size"], r["phase"], r["framework"]): r for r in records}
  configs = list(dict.fromkeys((r["model"], r["size"], r["phase"]) for r in records))
  fws = [fw for fw in FRAMEWORKS + OPTIONAL if any(r["framework"] == fw for r in records)]
  head = f"{'model':<13}{'px':>4} {'phase':<9}"
  for fw in fws:
    head += f"| {SHORT[fw] + ' img/s':>16} {'compile':>8} {'RSS MB':>7} {'GF/s':>6} "
  head += "| jaxmed/best keras-tf"
  print(f"\nimg/s = median over timed windows; compile in s; RSS = peak resident set of the "
        f"framework's process; GF/s from jaxmed's XLA FLOP count (matmul peak {peak:.0f} GF/s)")
  print(head)
  print("-" * len(head))
  for cfg in configs:
    line = f"{cfg[0]:<13}{cfg[1]:>4} {cfg[2]:<9}"
    for fw in fws:
      r = keyed.get(cfg + (fw,))
      if r is None:
        line += f"| {'-':>16} {'-':>8} {'-':>7} {'-':>6} "
        continue
      spread = f"{r['img_per_s']:.1f} ({r['img_per_s_min']:.0f}-{r['img_per_s_max']:.0f})"
      line += (f"| {spread:>16} {r['compile_s']:>8.1f} {r['peak_rss_mb']:>7.0f} "
               f"{fmt(r['gflops_per_s'], '6.1f')} ")
    j = keyed.get(cfg + ("jaxmed",))
    keras_best = max((keyed[cfg + (fw,)] for fw in ("keras-tensorflow", "keras-tensorflow-bf16")
                      if cfg + (fw,) in keyed), key=lambda r: r["img_per_s"], default=None)
    line += f"| {j['img_per_s'] / keras_best['img_per_s']:.2f}x" if j and keras_best else "| -"
    print(line)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="MobileNetV2, 128 px, finetune, jaxmed and keras-tf only")
  parser.add_argument("--json", help="write the records (a JSON list) to this file")
  parser.add_argument("--repeats", type=int, default=5, help="timed windows per framework")
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--sizes", default="128,224")
  parser.add_argument("--phases", default="finetune,frozen")
  parser.add_argument("--frameworks", default=None, help=f"default {','.join(FRAMEWORKS)} "
                      f"(+ keras-tensorflow-bf16 on a CPU with AMX)")
  parser.add_argument("--configs", help="explicit model:size:phase list (overrides the three above)")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--window-s", type=float, default=4.0, help="target seconds per window")
  parser.add_argument("--max-steps", type=int, default=10, help="most steps per window")
  parser.add_argument("--log", default=None, help="workers' stderr (default: a temp file)")
  args = parser.parse_args()
  args.frameworks_given = args.frameworks is not None
  args.frameworks = args.frameworks or ",".join(FRAMEWORKS)

  if args.quick:
    configs = [("mobilenet_v2", 128, "finetune")]
    frameworks = ["jaxmed", "keras-tensorflow"]
  else:
    if args.configs:
      configs = [(m, int(s), p) for m, s, p in (c.split(":") for c in args.configs.split(","))]
    else:
      configs = [(m, int(s), p) for s in args.sizes.split(",") for m in args.models.split(",")
                 for p in args.phases.split(",")]
    frameworks = [f for f in FRAMEWORKS + OPTIONAL if f in args.frameworks.split(",")]
  matrix = matrix_unit_figures()
  if matrix["matrix_flags"] and "amx_bf16" in matrix["matrix_flags"] and not args.frameworks_given:
    frameworks.append("keras-tensorflow-bf16")  # a matrix unit: Keras' mixed precision may win

  log_path = args.log or f"/tmp/jaxmed_throughput_{os.getpid()}.log"
  print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{load_average()}; worker logs: {log_path}")
  t_run = time.perf_counter()
  peak_start = matmul_peak_gflops()
  print(f"numpy float32 matmul peak: {peak_start:.1f} GFLOP/s; matrix units: "
        f"{' '.join(matrix['matrix_flags']) or 'none'}; jax {matrix['jaxlib']} products "
        f"(GFLOP/s): float32 {matrix['float32_gflops']}, bfloat16 {matrix['bfloat16_gflops']}, "
        f"bfloat16 with float32 accumulation {matrix['bfloat16_accumulate_float32_gflops']}")
  records = []
  with open(log_path, "a") as log:
    for model, size, phase in configs:
      print(f"{model} {size}px {phase} (load {load_average()})", flush=True)
      records += bench_config(model, size, phase, frameworks, args, log, peak_start)
      if args.json:  # after every configuration, so an interrupted run keeps what it measured
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
  peak_end = matmul_peak_gflops()
  peak = max(peak_start, peak_end)
  for r in records:
    if r["gflops_per_s"]:
      r["pct_of_matmul_peak"] = 100 * r["gflops_per_s"] / peak
    r["matmul_peak_gflops"] = peak
    r["matrix_units"] = matrix
  print(f"numpy float32 matmul peak at the end: {peak_end:.1f} GFLOP/s; total "
        f"{(time.perf_counter() - t_run) / 60:.1f} min; load average {load_average()}")
  print_table(records, peak)
  if args.json:
    Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
