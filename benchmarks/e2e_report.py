"""The end-to-end benchmark's report (benchmarks/end_to_end.py): per-framework summaries (time
to the target accuracy, per-phase epoch seconds), the stdout tables, machine and versions."""

import importlib.metadata
import os
import platform
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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
