"""Export a trained run as one self-describing file for prediction without the workdir.

  python -m jaxmed.export --workdir DIR --out model.jaxmed [--checkpoint best|latest] [--force]
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
  try:
    run = load_run(args.workdir, args.checkpoint)
  except (FileNotFoundError, ValueError) as e:
    raise cli.UserError(str(e)) from e
  out = write_bundle(run, args.out, force=True,
                     source=f"{Path(args.workdir).resolve()} ({args.checkpoint} checkpoint)")
  header, _ = read_header(out)
  print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {header['model']['arch']}, "
        f"{header['image_size']}px, classes {', '.join(header['classes'])}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
