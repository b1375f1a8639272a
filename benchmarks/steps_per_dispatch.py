"""How many train steps per dispatch (train.steps_per_dispatch) the default should be: the loop's
step time for K = 1, 2, 4, 8, 16, 32 in a launch-bound case and in the demo's fine-tuning.

  python benchmarks/steps_per_dispatch.py [--ks 1,2,4,8,16,32] [--repeats 2] [--json FILE]

Cases (each a `python -m jaxmed.train` run; the loop's step time is the median over the run's
epochs of the epoch's train time / steps, from summary.json timings.epochs):
  lenet_32      the demo's data at 32 px through LeNet (random init), 4 fine-tuning epochs
  demo_ft       configs/demo.py with 0 frozen and 3 fine-tuning epochs
Runs go round-robin over K, `repeats` times, after one warm-up run per case (compilation cache).
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixed_costs import cpu_model  # noqa: E402

CASES = {
    "lenet_32": ["--config.model.arch=lenet", "--config.model.weights=None",
                 "--config.data.image_size=32", "--config.frozen.epochs=0",
                 "--config.finetune.epochs=4"],
    "demo_ft": ["--config.frozen.epochs=0", "--config.finetune.epochs=3"],
}


def step_ms(workdir: Path, overrides: list[str]) -> float:
  subprocess.run([sys.executable, "-m", "jaxmed.train", "--config", "demo", "--workdir",
                  str(workdir), *overrides], check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  epochs = json.loads((workdir / "summary.json").read_text())["timings"]["epochs"]
  return statistics.median(e["train_s"] / e["steps"] * 1e3 for e in epochs)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ks", default="1,2,4,8,16,32")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--json")
  args = parser.parse_args()
  ks = [int(k) for k in args.ks.split(",")]
  results, t0 = {}, time.time()
  with tempfile.TemporaryDirectory() as tmp:
    runs = 0
    for case, overrides in CASES.items():
      step_ms(Path(tmp) / f"warm_{case}", overrides)  # fills the compilation cache
      for repeat in range(args.repeats):
        for k in ks:
          runs += 1
          ms = step_ms(Path(tmp) / f"run{runs}", [*overrides, f"--config.train.steps_per_dispatch={k}"])
          results.setdefault(case, {}).setdefault(k, []).append(ms)
  import jax
  from jaxmed.runtime import run_info
  print(f"{cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{datetime.date.today()}, {time.time() - t0:.0f} s")
  print(f"{'case':10s} " + " ".join(f"{'K=' + str(k):>9s}" for k in ks) + "   (loop step ms, median)")
  for case, by_k in results.items():
    print(f"{case:10s} " + " ".join(f"{statistics.median(by_k[k]):9.2f}" for k in ks))
  if args.json:
    Path(args.json).write_text(json.dumps({
        "machine": cpu_model(), "versions": run_info.versions(),
        "date": datetime.date.today().isoformat(), "step_ms": results}, indent=1))


if __name__ == "__main__":
  main()
