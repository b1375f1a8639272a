"""The run folder (`--workdir`): refuse to overwrite a finished run or the user's files, resume
only under the config that started it, leave the folder as found when a run fails before its
first checkpoint, keep metrics.jsonl in step with the checkpoint, write JSON atomically."""

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

from jaxmed.runtime.cli import UserError


def read_history(workdir: Path, epochs_done: int) -> list[dict]:
  """metrics.jsonl records up to the checkpointed epoch; later ones (written after the last
  checkpoint by a run that was then killed) are dropped so a resumed run rewrites them."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  kept = [r for r in records if r["epoch"] <= epochs_done]
  if len(kept) != len(records):
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
  return kept


def write_json_atomic(path: Path, obj):
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: no two share it
  tmp.write_text(json.dumps(obj, indent=2, default=str))
  tmp.replace(path)


# What a run writes; a workdir holding anything else is the user's and is never reused silently.
RUN_FILES = ("config.json", "classes.json", "metrics.jsonl", "summary.json", "checkpoints",
             "tensorboard", "report", "eval")
USER_INPUTS = ("doctor.json",)  # put there by the user for the report (README: the doctor)


def has_checkpoint(workdir: Path) -> bool:
  """Whether checkpoints/latest holds a complete checkpoint (orbax renames a step's folder to
  its number only once it is written)."""
  latest = Path(workdir) / "checkpoints" / "latest"
  return latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())


def prepare_workdir(workdir: str | None, config_name: str, config,
                    overwrite: bool = False) -> tuple[Path, bool]:
  """Decides where the run goes, creating nothing; returns (workdir, start_over), start_over
  meaning jaxmed's own files there are to be cleared first. Accepted: a new or empty folder; a
  checkpoint this config resumes (with or without `overwrite`: progress is never thrown away by
  re-running the same command); what a run of this config left when it was killed before its
  first checkpoint. Refused unless `overwrite`: a finished run, another config's files, and
  anything jaxmed did not write (which `overwrite` keeps: only RUN_FILES are cleared)."""
  if workdir is None:
    workdir = Path("runs") / f"{Path(config_name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise UserError(f"--workdir {workdir} is a file, not a folder; pass a folder")
  present = sorted(p.name for p in workdir.iterdir()) if workdir.is_dir() else []
  ours = [name for name in present if name in RUN_FILES]
  foreign = [name for name in present if name not in RUN_FILES + USER_INPUTS]
  finished = "summary.json" in present
  if has_checkpoint(workdir) and not finished and (not overwrite or same_config(workdir, config)):
    check_resumable(workdir, config)
    return workdir, False
  if overwrite:
    return workdir, bool(ours)
  if finished:
    raise UserError(f"{workdir} holds a finished run (summary.json); pass another --workdir, move "
                    f"that folder away, or pass --overwrite to train there again")
  if foreign or (ours and ("report" in ours or not same_config(workdir, config))):
    shown = ", ".join((foreign + ours)[:6])
    more = len(foreign + ours) - 6
    raise UserError(f"{workdir} is not empty ({shown}{f' and {more} more' if more > 0 else ''}) "
                    f"and holds no checkpoint to resume; pass another --workdir, move those "
                    f"away, or pass --overwrite to replace them")
  return workdir, bool(ours)  # a run of this config killed before its first checkpoint: again


def same_config(workdir: Path, config) -> bool:
  saved = workdir / "config.json"
  try:
    return json.loads(saved.read_text()) == json.loads(config.to_json_best_effort())
  except (OSError, ValueError):
    return False


def check_resumable(workdir: Path, config) -> None:
  """A workdir with checkpoints resumes only under the config that started it."""
  saved = workdir / "config.json"
  if saved.exists():
    before, now = json.loads(saved.read_text()), json.loads(config.to_json_best_effort())
    if before != now:
      changed = sorted(k for k in set(_flat(before)) | set(_flat(now))
                       if _flat(before).get(k) != _flat(now).get(k))
      raise UserError(f"{workdir} was started with another config ({', '.join(changed[:6])} "
                      f"differ); resume with the same config or pass a new --workdir")


def clear_run_files(workdir: Path):
  """--overwrite: removes what an earlier run wrote (RUN_FILES only; nothing else is touched)."""
  for name in RUN_FILES:
    path = workdir / name
    if path.is_dir():
      shutil.rmtree(path)
    elif path.exists():
      path.unlink()


@contextlib.contextmanager
def undo_on_failure(workdir: Path, primary: bool = True):
  """A run that fails before its first checkpoint leaves the workdir as it found it: what it
  created there is removed (a config error, unreadable data, a diverged first epoch, Ctrl-C
  twice), so the corrected command just works. After a checkpoint everything stays: it resumes."""
  existed = workdir.exists()
  before = set(os.listdir(workdir)) if existed else set()
  try:
    yield
  except BaseException:
    if primary and workdir.is_dir() and not has_checkpoint(workdir):
      for name in set(os.listdir(workdir)) - before:
        path = workdir / name
        if path.is_dir() and not path.is_symlink():
          shutil.rmtree(path)
        else:
          path.unlink()
      if not existed and not any(workdir.iterdir()):
        workdir.rmdir()
    raise


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out
