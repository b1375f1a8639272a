"""Train a transfer-learning image classifier: frozen backbone first, then fine-tuning.

  python -m jaxmed.train --config demo [--workdir DIR] [--config.KEY=VALUE ...]
  python -m jaxmed.train --config configs/demo.py        (a path works too, also your own file)
  python -m jaxmed.train --config tpu:brain_tumor_mri    (a hardware overlay on a dataset config)

Data flows one way: label folders -> split -> decoded uint8 images (on the device when they fit
data.device_memory_budget_mb, else streamed batch by batch; jaxmed/training/input_path.py) ->
compiled train step -> per-epoch validation -> checkpoints -> test evaluation -> metrics.jsonl,
summary.json and report/ (PNGs and index.html) in the workdir. The loop itself is
jaxmed/training/loop.py; in Python: `jaxmed.fit(jaxmed.config("demo"))`.
"""

import jaxmed.runtime.platform

if __name__ == "__main__":  # before the heavy imports: the loader reads LD_PRELOAD at process start
  jaxmed.runtime.platform.restart_with_fast_allocator()

import errno
import sys

from jaxmed.runtime import cli


def define_flags(values):
  from absl import flags
  flags.DEFINE_string("workdir", None, "Output folder; default runs/<config>-<timestamp>.",
                      flag_values=values)
  flags.DEFINE_bool("overwrite", False, "Reuse a --workdir that holds other files or a finished "
                    "run, replacing what an earlier run wrote there.", flag_values=values)
  flags.DEFINE_bool("distributed", False, "Join the other processes of a multi-host job "
                    "(jax.distributed.initialize; see jaxmed/runtime/distributed.py).",
                    flag_values=values)


@cli.command
def main(argv) -> int:
  from absl import logging as absl_logging
  from jaxmed.runtime import config_files, distributed
  from jaxmed.runtime.progress import format_seconds
  from jaxmed.training import program_preload
  values = cli.parse_config_flags(argv, "python -m jaxmed.train", define_flags)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  distributed.initialize(values.distributed)
  program_preload.start(values.config, imports_follow=True)  # on the core the imports leave idle
  from jaxmed.training import loop
  program_preload.imports_finished()
  try:
    workdir, summary = loop.fit(values.config, values.workdir, overwrite=values.overwrite,
                                config_name=config_files.stem(cli.config_path(values)))
  except OSError as e:  # a disk that filled up while training: the user's to fix
    if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not e.filename:
      raise
    raise cli.UserError(f"cannot write {e.filename}: {e.strerror}; free some space, or pass "
                        f"another --workdir (the last checkpoint is intact: checkpoints are "
                        f"written whole or not at all)") from e
  except loop.TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except loop.TrainingStopped as e:
    distributed.say(str(e))
    return e.exit_code
  split_name = "test" if "test" in summary else "val"
  t = summary["timings"]
  distributed.say(
      f"{split_name} accuracy {summary[split_name]['accuracy']:.4f}  macro-F1 "
      f"{summary[split_name]['macro_f1']:.4f}  | data {format_seconds(t['data_s'])}, compile "
      f"{format_seconds(t['compile_s'])}, train {format_seconds(t['train_s'])}, eval "
      f"{format_seconds(t['evaluate_s'])}, total {format_seconds(t['total_s'])}")
  distributed.say(f"wrote {workdir}/summary.json, metrics.jsonl, report/ (index.html, *.png)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
