"""k-fold cross-validation: one training per fold, out-of-fold metrics with bootstrap intervals,
and the fold ensemble on the test split.

  python -m jaxmed.crossval --config CONFIG --folds 5 [--workdir W] [--group-regex REGEX]
                            [--config.KEY=VALUE ...]

Train and val are pooled and cut into stratified folds (groups whole: `--group-regex` as in
`python -m jaxmed.split`, and identical files); fold K trains on the others and is validated on
K, each in W/fold-K (an ordinary, resumable workdir). Re-running the same command resumes at the
fold and step where it stopped. W/cv_summary.json holds `folds`, `oof` and `ensemble_test`
(jaxmed/training/crossval.py). In Python: `jaxmed.crossval(jaxmed.config("chest_xray"), W, folds=5)`.
"""

import jaxmed.runtime.platform

if __name__ == "__main__":  # before the heavy imports: the loader reads LD_PRELOAD at process start
  jaxmed.runtime.platform.restart_with_fast_allocator()

import sys
import time

from jaxmed.runtime import cli


def define_flags(values):
  from absl import flags
  flags.DEFINE_integer("folds", 5, "number of folds (at least 2)", flag_values=values)
  flags.DEFINE_string("workdir", None, "output folder; default runs/crossval-<config>-<time>",
                      flag_values=values)
  flags.DEFINE_string("group_regex", None, "keep images whose names share this regex's first "
                      "group (e.g. a patient id) in one fold", flag_values=values)


def format_summary(summary: dict) -> str:
  has_test = "ensemble_test" in summary
  lines = [f"{'fold':>6} {'val acc':>8} {'val F1':>8}" + (f" {'test acc':>9} {'test F1':>8}"
                                                          if has_test else "")]
  for f in summary["folds"]:
    row = f"{f['fold']:>6} {f['val']['accuracy']:>8.4f} {f['val']['macro_f1']:>8.4f}"
    if has_test:
      row += f" {f['test']['accuracy']:>9.4f} {f['test']['macro_f1']:>8.4f}"
    lines.append(row)
  for name in ("oof", "ensemble_test"):
    if name in summary:
      m = summary[name]
      ci = m["ci95"]
      lines.append(f"{name}: accuracy {m['accuracy']:.4f} [{ci['accuracy'][0]:.4f}, "
                   f"{ci['accuracy'][1]:.4f}], macro-F1 {m['macro_f1']:.4f} "
                   f"[{ci['macro_f1'][0]:.4f}, {ci['macro_f1'][1]:.4f}] ({m['num_examples']} images)")
  fitted = summary.get("oof_calibration")
  if fitted:
    b, a = fitted["before"], fitted["after"]
    lines.append(f"out-of-fold temperature {fitted['temperature']:.3f}: NLL {b['nll']:.4f} -> "
                 f"{a['nll']:.4f}, ECE {b['ece']:.4f} -> {a['ece']:.4f} (reported, not applied)")
  return "\n".join(lines)


@cli.command
def main(argv) -> int:
  from absl import logging as absl_logging
  from jaxmed.runtime import config_files
  from jaxmed.training import crossval
  # `--group-regex` as jaxmed.split spells it (absl flags take underscores)
  argv = [a.replace("--group-regex", "--group_regex", 1) if a.startswith("--group-regex") else a
          for a in argv]
  values = cli.parse_config_flags(argv, "python -m jaxmed.crossval", define_flags)
  absl_logging.set_verbosity(absl_logging.WARNING)
  workdir = values.workdir or (f"runs/crossval-{config_files.stem(cli.config_path(values))}-"
                               f"{time.strftime('%Y%m%d-%H%M%S')}")
  try:
    summary = crossval.run_crossval(values.config, workdir, values.folds, values.group_regex)
  except ValueError as e:  # too few groups for the folds, a damaged dataset: the user's to fix
    raise cli.UserError(str(e)) from e
  print(format_summary(summary))
  print(f"wrote {workdir}/cv_summary.json")
  return 0


def _api(*args, **kwargs):
  from jaxmed import api
  return api.crossval(*args, **kwargs)


cli.make_callable(__name__, _api)  # jaxmed.crossval(...) stays the API after this import

if __name__ == "__main__":
  sys.exit(main())
