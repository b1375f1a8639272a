"""The run folder (`--workdir`): refuse to overwrite a finished run, resume only under the config
that started it, keep metrics.jsonl in step with the checkpoint, write JSON atomically."""

import json
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


def prepare_workdir(workdir: str | None, config_path: str) -> Path:
  if workdir is None:
    workdir = Path("runs") / f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
  workdir = Path(workdir)
  if (workdir / "summary.json").exists():
    raise UserError(f"{workdir} holds a finished run (summary.json); "
                    f"pass another --workdir, or move that folder away first")
  workdir.mkdir(parents=True, exist_ok=True)
  return workdir


def check_resumable(workdir: Path, config) -> None:
  """A workdir with checkpoints resumes only under the config that started it."""
  saved = workdir / "config.json"
  if saved.exists() and (workdir / "checkpoints" / "latest").exists():
    before, now = json.loads(saved.read_text()), json.loads(config.to_json_best_effort())
    if before != now:
      changed = sorted(k for k in set(_flat(before)) | set(_flat(now))
                       if _flat(before).get(k) != _flat(now).get(k))
      raise UserError(f"{workdir} was started with another config ({', '.join(changed[:6])} "
                      f"differ); resume with the same config or pass a new --workdir")


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out
