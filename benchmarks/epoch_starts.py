"""What each epoch's start costs in a real run: the time per step of an epoch's first group of
steps (its start to the loop's first read) against the epoch's later groups (between reads), with
the epoch-end checkpoints written as shipped (in the background) or not at all.

  python benchmarks/epoch_starts.py [--runs 3] [--variants shipped,no_checkpoints] [--json FILE]
                                    [-- TRAIN ARGS]    (default: --config demo)

Each run is a separate `python -m jaxmed.train` process (TRAIN ARGS, a scratch workdir, the
user's compilation and program caches: warm them with one run first); the variants alternate.
`no_checkpoints` makes Checkpoints.save and save_latest do nothing: it shows what the
checkpoint's background write takes from the next epoch's first steps, on the same cores.
Per run and epoch: [phase, ms per step of the first group (from the epoch's first dispatch,
the phase's first step included), median ms per step of the later groups].
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixed_costs import cpu_model  # noqa: E402

MARKER = "EPOCH_STARTS "


def _instrument(variant: str):
  """Runs in the training process: wraps the loop's epoch start and end to time its reads."""
  from jaxmed.training import checkpoint, phase
  epochs = []
  note_start, end_epoch = phase.Phase._note_epoch_start, phase.Phase._end_epoch

  def note(self):
    self.epoch_started = time.perf_counter()
    return note_start(self)

  def end(self, *args):
    steps, at = self.read_marks[0]
    first = (at - self.epoch_started) * 1e3 / steps
    epochs.append([self.name, first, phase.read_step_ms(self.read_marks) or first])
    return end_epoch(self, *args)

  phase.Phase._note_epoch_start, phase.Phase._end_epoch = note, end
  if variant == "no_checkpoints":
    checkpoint.Checkpoints.save = lambda self, *args, **kwargs: False
    checkpoint.Checkpoints.save_latest = lambda self, *args, **kwargs: None
  import atexit
  atexit.register(lambda: print(MARKER + json.dumps(epochs), file=sys.stderr))


def _one_run(variant: str, train_args: list[str]) -> list:
  with tempfile.TemporaryDirectory(prefix="epoch_starts_") as tmp:
    code = ("import jaxmed.runtime.platform as p; p.restart_with_fast_allocator(); "  # as jaxmed.train
            f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            f"import epoch_starts; epoch_starts._instrument({variant!r}); "
            "from jaxmed import train; "
            f"sys.argv = ['jaxmed.train', *{train_args!r}, '--workdir', {tmp + '/run'!r}]; "
            "sys.exit(train.main())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  lines = [line for line in done.stderr.splitlines() if line.startswith(MARKER)]
  if done.returncode != 0 or not lines:
    raise SystemExit(f"epoch_starts: the {variant} run failed (exit {done.returncode}):\n"
                     f"{done.stderr[-2000:]}")
  return json.loads(lines[-1][len(MARKER):])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--variants", default="shipped,no_checkpoints")
  parser.add_argument("--json")
  parser.add_argument("train_args", nargs="*", default=["--config", "demo"])
  args = parser.parse_args()
  variants = args.variants.split(",")
  results = {v: [] for v in variants}
  started = datetime.datetime.now(datetime.timezone.utc)
  for _ in range(args.runs):
    for variant in variants:
      results[variant].append(_one_run(variant, args.train_args))
  from jaxmed.runtime import run_info
  context = {"machine": cpu_model(), "cores": os.cpu_count(), "versions": run_info.versions(),
             "started_utc": started.isoformat(timespec="seconds"),
             "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
  print(f"{context['machine']}, {context['cores']} cores, {context['started_utc']}; "
        "ms per step: first group / later groups, per epoch")
  for variant, runs in results.items():
    for i, epochs in enumerate(runs, 1):
      cells = " ".join(f"{first:.0f}/{later:.0f}" for _, first, later in epochs)
      print(f"{variant:15s} run {i}: {cells}")
  if args.json:
    Path(args.json).write_text(json.dumps({"context": context, "results": results}, indent=1))


if __name__ == "__main__":
  main()
