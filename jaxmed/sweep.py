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

from jaxmed.runtime import cli


def arch_dirname(arch: str) -> str:
  return arch.replace("/", "-")


def define_flags(values):
  from absl import flags
  flags.DEFINE_string("workdir", None, "Folder that receives one run per backbone.",
                      flag_values=values)


@cli.command
def main(argv) -> int:
  values = cli.parse_config_flags(argv, "python -m jaxmed.sweep", define_flags)
  if values.workdir is None:
    raise cli.UserError("--workdir is required: the folder that receives one run per backbone")
  config = values.config
  archs = list(config.sweep.archs)
  workdir = Path(values.workdir)
  config_path = cli.config_path(values)
  overrides = [a for a in argv if a.startswith("--config.")]
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
  from jaxmed.reporting.compare import write_comparison
  out = workdir / "comparison.md"
  print(write_comparison([r for r in runs if (r / "summary.json").exists()], out), end="")
  print(f"wrote {out} and {out.with_suffix('.json')}")
  if failed:
    print(f"error: {len(failed)} backbone(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
