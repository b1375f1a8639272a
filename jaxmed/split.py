"""Write a split manifest, so a run's exact files, labels and splits are fixed and auditable.

  python -m jaxmed.split PATH --out split.jsonl [--seed 0] [--val-fraction 0.15]
      [--remix 0.8,0.1,0.1] [--group-regex 'REGEX'] [--group-by copies] [--force]

Default: the dataset's own splits, validation carved from train exactly as training does (so a
run with the manifest equals one without). --remix merges every split, drops exact duplicates
and re-splits stratified at the ratios (train,val[,test]). --group-regex keeps groups whole: the
regex runs on each path below PATH, its first capture group is the group (patient/study) id.
--group-by copies keeps each copy cluster whole (augmented copies of one original, found as the
doctor finds them: jaxmed/data/copies.py); with --group-regex too, either link joins a group.
Train with: --config.data.manifest=split.jsonl. The format is described in jaxmed/data/manifest.py.
"""

import argparse
import collections
import re
import sys

from jaxmed.runtime import cli
from jaxmed.data import manifest


def _parse_ratios(text: str) -> tuple[float, ...]:
  try:
    ratios = tuple(float(x) for x in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected numbers like 0.8,0.1,0.1, got {text!r}")
  if len(ratios) not in (2, 3) or abs(sum(ratios) - 1) > 1e-6 or min(ratios) < 0:
    raise argparse.ArgumentTypeError(f"ratios (train,val[,test]) must sum to 1, got {text!r}")
  return ratios


def _regex(text: str) -> str:
  try:
    re.compile(text)
  except re.error as e:
    raise argparse.ArgumentTypeError(f"bad regex {text!r}: {e}")
  return text


def summary(classes, rows) -> str:
  counts = collections.defaultdict(collections.Counter)
  for r in rows:
    counts[r["split"]][r["label"]] += 1
  width = max([5] + [len(c) for c in classes])
  lines = [f"{'split':10s}" + "".join(f"{c:>{width + 2}s}" for c in classes) + f"{'total':>8s}"]
  for s, c in counts.items():
    lines.append(f"{s:10s}" + "".join(f"{c[k]:>{width + 2}d}" for k in classes) + f"{sum(c.values()):>8d}")
  return "\n".join(lines)


@cli.command
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxmed.split", description=__doc__.split("\n")[0])
  parser.add_argument("path", help="dataset folder, .zip/.tar(.gz), .npz or tfds:NAME[:SPLIT]")
  parser.add_argument("--out", required=True, help="manifest to write (.jsonl)")
  parser.add_argument("--seed", type=int, default=0, help="as the training config's seed")
  parser.add_argument("--val-fraction", type=float, default=0.15, help="as config.data.val_fraction")
  parser.add_argument("--remix", type=_parse_ratios, default=None, help="e.g. 0.8,0.1,0.1")
  parser.add_argument("--group-regex", type=_regex, default=None, help=r"e.g. '(person\d+)_'")
  parser.add_argument("--group-by", choices=["copies"], default=None,
                      help="keep clusters of augmented copies in one split")
  parser.add_argument("--force", action="store_true", help="overwrite an existing manifest")
  parser.add_argument("--workers", type=int, default=None)
  args = parser.parse_args(argv)
  try:
    classes, rows, found = manifest.make_rows(
        args.path, seed=args.seed, val_fraction=args.val_fraction, remix=args.remix,
        group_regex=args.group_regex, group_by=args.group_by, workers=args.workers)
    method = {"remix": args.remix, "group_regex": args.group_regex, "group_by": args.group_by,
              "seed": args.seed,
              "val_fraction": None if args.remix else args.val_fraction}
    manifest.write(args.out, classes, rows, source=found.root, method=method, force=args.force)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    raise cli.UserError(str(e)) from e
  for line in found.warnings():  # empty class folders, refused archive members
    print(line, file=sys.stderr)
  if (args.group_regex or args.group_by) and not args.remix and "val" in found.splits:
    print("note: the dataset has its own val split, so grouping changed nothing (use --remix)")
  print(summary(classes, rows))
  excluded = [r for r in rows if r["split"] == manifest.EXCLUDED]
  for r in excluded[:10]:
    print(f"excluded: {r['file']} ({r.get('note', '')})")
  print(f"wrote {len(rows)} rows to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
