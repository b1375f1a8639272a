"""Export a trained run as one self-describing file for prediction without the workdir.

  python -m jaxmed.export --workdir DIR --out model.jaxmed [--checkpoint best|latest] [--force]
  python -m jaxmed.export --workdir CV_DIR --out folds.jaxmed   (a crossval dir: the fold ensemble)
  python -m jaxmed.predict --bundle model.jaxmed image.png ...

The file format: jaxmed/evaluation/bundle.py.
"""

import argparse
import sys
from pathlib import Path

from jaxmed.runtime import cli


@cli.command
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxmed.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True, help="bundle file to write, e.g. model.jaxmed")
  parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
  parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
  args = parser.parse_args(argv)
  from jaxmed.evaluation.bundle import read_header, write_bundle
  from jaxmed.evaluation.trained_run import load_run
  if Path(args.out).exists() and not args.force:  # fail before loading anything
    raise cli.UserError(f"{args.out} exists; pass --force to overwrite it")
  workdir = Path(args.workdir)
  folds = sorted(workdir.glob("fold-*"), key=lambda p: int(p.name.split("-")[1])) \
      if (workdir / "cv_plan.json").exists() else []  # python -m jaxmed.crossval's folds
  try:
    runs = [load_run(d, args.checkpoint) for d in folds] or [load_run(workdir, args.checkpoint)]
    out = write_bundle(runs[0], args.out, force=True, members=runs if folds else None,
                       source=f"{workdir.resolve()} ({args.checkpoint} checkpoint"
                              f"{f' of {len(folds)} folds' if folds else ''})")
  except (FileNotFoundError, ValueError) as e:
    raise cli.UserError(str(e)) from e
  header, _ = read_header(out)
  ensemble = f", an ensemble of {header['ensemble']} folds" if header.get("ensemble") else ""
  print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB{ensemble}): {header['model']['arch']}, "
        f"{header['image_size']}px, classes {', '.join(header['classes'])}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
