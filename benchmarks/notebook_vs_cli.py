"""The demo's training time from a notebook kernel vs the command line, in one sitting.

  python benchmarks/notebook_vs_cli.py [--repeats 1] [--json FILE] [--overrides --config.K=V ...]

Variants, run one after the other, each into a fresh workdir, `repeats` times round-robin:
  cli              python -m jaxmed.train --config demo (restarts itself with mimalloc on Linux)
  notebook         jaxmed.fit(jaxmed.config("demo")) in a Jupyter kernel (nbclient), which keeps
                   the kernel's allocator (glibc)
  notebook-subproc jaxmed.fit(..., subprocess=True) from the same kind of kernel
Reports each run's summary.json timings (train_s, compile_s, total_s) and the wall time, the
median per variant, the CPU model and the versions. The XLA compilation cache is shared, as on a
user's machine after the first run; run once before timing to warm it.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("cli", "notebook", "notebook-subproc")


def cpu_model() -> str:
  for line in Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return platform.processor()


def run_cli(workdir: Path, overrides: list[str]):
  subprocess.run([sys.executable, "-m", "jaxmed.train", "--config", "demo", "--workdir",
                  str(workdir), *overrides], check=True, stdout=subprocess.DEVNULL)


def run_kernel(workdir: Path, overrides: list[str], in_subprocess: bool):
  import nbformat
  from nbclient import NotebookClient
  sets = "\n".join(f"cfg.{k.removeprefix('--config.').split('=')[0]} = "
                   f"{v!r}" for k, v in (o.split("=", 1) for o in overrides))
  code = ("import jaxmed\ncfg = jaxmed.config('demo')\n" + sets.replace("'None'", "None") +
          f"\nrun = jaxmed.fit(cfg, {str(workdir)!r}, subprocess={in_subprocess})\n")
  notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
  NotebookClient(notebook, kernel_name="python3", timeout=1800).execute()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--json")
  parser.add_argument("--overrides", nargs="*", default=[])
  args = parser.parse_args()
  import jax
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.repeats):
      for variant in VARIANTS:
        workdir = Path(tmp) / f"{variant}-{r}"
        start = time.perf_counter()
        if variant == "cli":
          run_cli(workdir, args.overrides)
        else:
          run_kernel(workdir, args.overrides, variant == "notebook-subproc")
        wall = time.perf_counter() - start
        summary = json.loads((workdir / "summary.json").read_text())
        row = {"variant": variant, "repeat": r, "wall_s": wall, **{k: summary["timings"][k] for k in
               ("train_s", "compile_s", "total_s")},
               "allocator": summary["machine"].get("allocator"),
               "test_accuracy": summary["test"]["accuracy"],
               "final_params_sha256": summary["final_params_sha256"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
  medians = {v: {k: statistics.median(r[k] for r in rows if r["variant"] == v)
                 for k in ("train_s", "compile_s", "total_s", "wall_s")} for v in VARIANTS}
  record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_model(), "cores": os.cpu_count(), "python": sys.version.split()[0],
            "jax": jax.__version__, "load_average": os.getloadavg(), "overrides": args.overrides,
            "rows": rows, "medians": medians}
  for v, m in medians.items():
    print(f"{v:17s} train {m['train_s']:6.1f} s  compile {m['compile_s']:5.1f} s  "
          f"total {m['total_s']:6.1f} s  wall {m['wall_s']:6.1f} s")
  if args.json:
    Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
  main()
