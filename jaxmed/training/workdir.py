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
  tmp = path.with_suffix(path.suffix + ".tmp")
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


def prepare_workdir(workdir: str | None, config_name: str, config, overwrite: bool = False) -> Path:
  """Decides where the run goes, creating nothing: a new or empty folder, or one whose
  checkpoint this config resumes. Refuses a finished run, a checkpoint of another config, and a
  folder holding anything else (unless `overwrite`: then jaxmed's own files there are replaced)."""
  if workdir is None:
    workdir = Path("runs") / f"{Path(config_name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise UserError(f"--workdir {workdir} is a file, not a folder; pass a folder")
  if (workdir / "summary.json").exists() and not overwrite:
    raise UserError(f"{workdir} holds a finished run (summary.json); pass another --workdir, or "
                    f"move that folder away first")
  if has_checkpoint(workdir) and not overwrite:
    check_resumable(workdir, config)
    return workdir
  present = sorted(p.name for p in workdir.iterdir()) if workdir.is_dir() else []
  foreign = [name for name in present if name not in USER_INPUTS]
  if foreign and not overwrite:
    shown = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
    raise UserError(f"{workdir} is not empty ({shown}) and holds no checkpoint to resume; pass "
                    f"another --workdir, move those away, or pass --overwrite to replace them")
  return workdir


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
