"""Compare finished runs side by side: backbone, input size, parameters, test metrics, speed.

  python -m jaxmed.compare RUN_DIR... [--out comparison.md]

Prints a markdown table and writes it to --out (default comparison.md) with the same rows as
JSON beside it (comparison.json). Metrics come from each run's summary.json (its test split, or
val when the run had no test split); images/s is the median training throughput over the
fine-tuning epochs (the frozen phase, without backbone gradients, is faster and not comparable).
"""

import argparse
import sys
from pathlib import Path

from jaxmed.runtime import cli


@cli.command
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxmed.compare", description=__doc__.split("\n")[0])
  parser.add_argument("runs", nargs="+", help="workdirs of finished runs")
  parser.add_argument("--out", default="comparison.md", help="markdown file; JSON goes beside it")
  args = parser.parse_args(argv)
  from jaxmed.reporting.compare import write_comparison
  out = Path(args.out)
  try:
    text = write_comparison(args.runs, out)
  except (FileNotFoundError, KeyError, ValueError) as e:
    raise cli.UserError(str(e)) from e
  print(text, end="")
  print(f"wrote {out} and {out.with_suffix('.json')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
