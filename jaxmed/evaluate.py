"""Evaluate a finished run on its test split, or on another dataset with the same classes.

  python -m jaxmed.evaluate --workdir DIR [--data PATH] [--split test] [--tta N] [--name NAME]

Prints a classification report (per-class precision, recall = sensitivity, specificity, F1,
support; macro and weighted averages), one-vs-rest ROC-AUC, the confusion matrix and 95 %
bootstrap intervals for accuracy and macro F1, and writes them with every prediction to
DIR/eval/<name>.json (name: the split, or the --data folder's name). In Python:
`jaxmed.evaluate(DIR, data=None, split="test", tta=1)`.
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
  args = parser.parse_args(argv)
  from jaxmed.evaluation import evaluator
  try:
    result, out = evaluator.evaluate_workdir(args.workdir, args.data, args.split, args.tta,
                                             args.checkpoint, args.name)
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
