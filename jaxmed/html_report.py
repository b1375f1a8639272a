"""One self-contained HTML report of a finished run: DIR/report/index.html.

  python -m jaxmed.html_report --workdir DIR [--gradcam-per-class 2] [--max-errors 24]

Sections: configuration, dataset (summary.json's data record; DIR/doctor.json's findings when
present), training curves per phase with the learning rate, test metrics, confusion matrix
(counts and row-normalised), one-vs-rest ROC curves, misclassified test images, augmentation
preview and Grad-CAM overlays. Every image is embedded as a base64 PNG data URI; the file
references nothing outside itself.
"""

import argparse
import sys

from jaxmed.runtime import cli


@cli.command
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxmed.html_report", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--gradcam-per-class", type=int, default=2)
  parser.add_argument("--max-errors", type=int, default=24)
  args = parser.parse_args(argv)
  from jaxmed.reporting.html import write_html_report
  try:
    path = write_html_report(args.workdir, args.gradcam_per_class, args.max_errors)
  except (FileNotFoundError, ValueError) as e:
    raise cli.UserError(str(e)) from e
  print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
