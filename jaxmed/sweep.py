"""Train several backbones on one dataset, then compare them side by side.

  python -m jaxmed.sweep --config configs/sweep_chest_xray.py --workdir runs/sweep [--config.KEY=V]

The config's `sweep.archs` lists the backbones (each with ImageNet weights where jaxmed has them,
else from scratch); every other field is shared. Each backbone trains in its own process
(`python -m jaxmed.train`, so a crash or OOM in one does not take the others down) into
WORKDIR/<arch>; re-running resumes unfinished ones and skips finished ones. The table goes to
WORKDIR/comparison.md and .json.
"""

import subprocess
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Sweep config with a `sweep.archs` list.")
flags.DEFINE_string("workdir", None, "Folder that receives one run per backbone.")
FLAGS = flags.FLAGS


def arch_dirname(arch: str) -> str:
  return arch.replace("/", "-")


def main(argv):
  config = FLAGS.config
  if config is None or FLAGS.workdir is None:
    sys.exit("error: --config and --workdir are required")
  archs = list(config.sweep.archs)
  workdir = Path(FLAGS.workdir)
  config_path = config_flags.get_config_filename(FLAGS["config"])
  overrides = [a for a in argv[1:]] + [a for a in sys.argv[1:] if a.startswith("--config.")]
  runs, failed = [], []
  for arch in archs:
    run_dir = workdir / arch_dirname(arch)
    runs.append(run_dir)
    if (run_dir / "summary.json").exists():
      print(f"== {arch}: finished earlier, kept", flush=True)
      continue
    weights = "imagenet" if arch not in ("lenet",) else "None"
    cmd = [sys.executable, "-m", "jaxmed.train", "--config", config_path, f"--workdir={run_dir}",
           f"--config.model.arch={arch}", f"--config.model.weights={weights}",
           *[o for o in overrides if not o.startswith(("--config.model.arch", "--config.model.weights"))]]
    print(f"== {arch}: {' '.join(cmd[1:])}", flush=True)
    if subprocess.run(cmd).returncode != 0:
      failed.append(arch)
  from jaxmed import compare
  compare.main([str(r) for r in runs if (r / "summary.json").exists()] +
               ["--out", str(workdir / "comparison.md")])
  if failed:
    sys.exit(f"error: {len(failed)} backbone(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
  app.run(main)
