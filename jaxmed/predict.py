"""Classify image files, folders and archives with a trained run or an exported bundle.

  python -m jaxmed.predict --workdir DIR PATH... [--format table|csv|json] [--gradcam OUT_DIR]
  python -m jaxmed.predict --bundle model.jaxmed PATH...

Prints, per file, the predicted class, its probability and every class's probability. A file
that cannot be read is reported (status 'error') and the rest go on; the exit status is 1 when
any file failed, 0 otherwise. --gradcam writes one PNG per image (original | Grad-CAM overlay
for the predicted class).
In Python: `jaxmed.predict(paths, workdir=DIR)`.
"""

import jaxmed.runtime.platform

if __name__ == "__main__":  # first thing: the allocator preload only takes at process start
  jaxmed.runtime.platform.restart_with_fast_allocator()  # (mimalloc; see jaxmed/runtime/platform.py)

import argparse
import sys

from jaxmed.runtime import cli


@cli.command
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxmed.predict", description=__doc__.split("\n")[0])
  parser.add_argument("paths", nargs="+", help="image files, folders or .zip/.tar archives")
  parser.add_argument("--workdir", help="a trained run")
  parser.add_argument("--bundle", help="a file written by python -m jaxmed.export")
  parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
  parser.add_argument("--format", default="table", choices=("table", "csv", "json"))
  parser.add_argument("--gradcam", metavar="OUT_DIR", help="write Grad-CAM overlays here")
  parser.add_argument("--batch-size", type=int, default=32)
  args = parser.parse_args(argv)
  from jaxmed.evaluation.inference import format_records, load_predictor, predict_files
  try:
    predictor = load_predictor(args.workdir, args.bundle, args.checkpoint)
  except (FileNotFoundError, ValueError) as e:
    raise cli.UserError(str(e)) from e
  records = predict_files(predictor, args.paths, args.batch_size, args.gradcam)
  sys.stdout.write(format_records(records, predictor.classes, args.format))
  failed = [r for r in records if r["status"] != "ok"]
  if failed:
    print(f"{len(failed)} of {len(records)} files could not be classified", file=sys.stderr)
  return 1 if failed else 0


def _api(*args, **kwargs):
  from jaxmed import api
  return api.predict(*args, **kwargs)


cli.make_callable(__name__, _api)  # jaxmed.predict(...) stays the API after this import

if __name__ == "__main__":
  sys.exit(main())
