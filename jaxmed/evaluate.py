"""Evaluate a finished run on its test split, or on another dataset with the same classes.

  python -m jaxmed.evaluate --workdir DIR [--data PATH] [--split test] [--tta N] [--name NAME]
                           [--calibrate] [--target-sensitivity 0.95 | --target-specificity 0.9]

Prints a classification report (per-class precision, recall = sensitivity, specificity, F1,
support; macro and weighted averages), one-vs-rest ROC-AUC, calibration (ECE over 15 bins, Brier,
NLL), the confusion matrix and 95 % bootstrap intervals for accuracy and macro F1, and writes
them with every prediction to DIR/eval/<name>.json (name: the split, or the --data folder's name).
--calibrate fits one temperature on the run's validation split and reports calibration before
and after (DIR/calibration.json keeps it); --target-sensitivity / --target-specificity choose
each class's one-vs-rest threshold on validation and report sensitivity, specificity, PPV and NPV
with Wilson intervals at it (DIR/operating_points.json). Nothing is ever chosen on the test split.
In Python: `jaxmed.evaluate(DIR, data=None, split="test", tta=1, calibrate=False, target=None)`.
"""

import jaxmed.runtime.platform

if __name__ == "__main__":  # first thing: the allocator preload only takes at process start
  jaxmed.runtime.platform.restart_with_fast_allocator()  # (mimalloc; see jaxmed/runtime/platform.py)

import argparse
import sys

from jaxmed.runtime import cli
from jaxmed.evaluation.predictions import MAX_TTA


@cli.command
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxmed.evaluate", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished jaxmed run")
  parser.add_argument("--data", help="another dataset with the same classes (folder, archive)")
  parser.add_argument("--split", default="test", help="split to evaluate (default test)")
  parser.add_argument("--tta", type=int, default=1, help=f"test-time views to average (1-{MAX_TTA})")
  parser.add_argument("--name", help="output name: DIR/eval/<name>.json")
  parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
  parser.add_argument("--calibrate", action="store_true",
                      help="fit a temperature on the validation split; report before/after")
  targets = parser.add_mutually_exclusive_group()
  targets.add_argument("--target-sensitivity", type=float,
                       help="per class, the threshold reaching this sensitivity on validation")
  targets.add_argument("--target-specificity", type=float,
                       help="per class, the threshold reaching this specificity on validation")
  args = parser.parse_args(argv)
  target = (("sensitivity", args.target_sensitivity) if args.target_sensitivity is not None else
            ("specificity", args.target_specificity) if args.target_specificity is not None else None)
  if target and not 0 < target[1] <= 1:
    raise cli.UserError(f"--target-{target[0]} {target[1]}: give a fraction in (0, 1], e.g. 0.95")
  from jaxmed.evaluation import evaluator
  try:
    result, out = evaluator.evaluate_workdir(args.workdir, args.data, args.split, args.tta,
                                             args.checkpoint, args.name, args.calibrate, target)
  except (FileNotFoundError, ValueError) as e:
    raise cli.UserError(str(e)) from e
  print(f"{args.data or args.workdir} [{args.split}], {result['num_examples']} images"
        f"{f', TTA x{args.tta}' if args.tta > 1 else ''}\n")
  print(evaluator.format_result(result, result["classes"]))
  print(f"\nwrote {out}")
  return 0


def _api(*args, **kwargs):
  from jaxmed import api
  return api.evaluate(*args, **kwargs)


cli.make_callable(__name__, _api)  # jaxmed.evaluate(...) stays the API after this import

if __name__ == "__main__":
  sys.exit(main())
