"""Train several backbones on one dataset, then compare them side by side.

  python -m jaxmed.sweep --config configs/sweep_chest_xray.py --workdir runs/sweep [--config.KEY=V]

The config's `sweep.archs` lists the backbones; `sweep.weights` ('imagenet', the default, or
'None' for random init everywhere) applies to each (LeNet always starts from scratch). Every other
field is shared. Each backbone trains in its own process (`python -m jaxmed.train`, or with
`sweep.folds = K` >= 2 `python -m jaxmed.crossval --folds K`, grouped by `sweep.group_regex` when
set; so a crash or OOM in one does not take the others down) into WORKDIR/<arch>; re-running
resumes unfinished ones and skips finished ones. The table goes to WORKDIR/comparison.md and .json (with K folds: out-of-fold metrics and
their intervals).
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
  folds = int(config.sweep.get("folds", 0) or 0)
  sweep_weights = str(config.sweep.get("weights", "imagenet"))
  workdir = Path(values.workdir)
  config_path = cli.config_path(values)
  overrides = [a for a in argv if a.startswith("--config.")]
  runs, failed = [], []
  for arch in archs:
    run_dir = workdir / arch_dirname(arch)
    runs.append(run_dir)
    if (run_dir / ("cv_summary.json" if folds >= 2 else "summary.json")).exists():
      print(f"== {arch}: finished earlier, kept", flush=True)
      continue
    weights = sweep_weights if arch not in ("lenet",) else "None"
    command = ["jaxmed.crossval", f"--folds={folds}"] if folds >= 2 else ["jaxmed.train"]
    if folds >= 2 and config.sweep.get("group_regex"):  # patients whole within one fold
      command.append(f"--group_regex={config.sweep.group_regex}")
    cmd = [sys.executable, "-m", command[0], "--config", config_path, f"--workdir={run_dir}",
           *command[1:], f"--config.model.arch={arch}", f"--config.model.weights={weights}",
           *[o for o in overrides if not o.startswith(("--config.model.arch", "--config.model.weights"))]]
    print(f"== {arch}: {' '.join(cmd[1:])}", flush=True)
    if subprocess.run(cmd).returncode != 0:
      failed.append(arch)
  from jaxmed.reporting.compare import write_comparison
  out = workdir / "comparison.md"
  finished = [r for r in runs if (r / "summary.json").exists() or (r / "cv_summary.json").exists()]
  print(write_comparison(finished, out), end="")
  print(f"wrote {out} and {out.with_suffix('.json')}")
  if failed:
    print(f"error: {len(failed)} backbone(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
