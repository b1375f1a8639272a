"""The persistent compilation cache stays effective: a second run of the same config compiles
nothing new (no cache-key churn from constants that change between runs, e.g. a time stamp, a
random seed drawn at start or a path baked into a program), and summary.json names every
program it compiled."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import write_label_tree

REPO = Path(__file__).resolve().parents[2]


def _run(root, workdir, cache):
  done = subprocess.run(
      [sys.executable, "-m", "jaxmed.train", "--config", "tests/tiny_config.py",
       f"--config.data.root={root}", f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAXMED_CACHE": str(cache)})
  assert done.returncode == 0, done.stdout + done.stderr
  return json.loads((Path(workdir) / "summary.json").read_text())["timings"]


def _entries(cache: Path) -> set[str]:
  return {p.name for p in (cache / "xla").iterdir()}


def test_a_second_run_of_the_same_config_compiles_nothing_new(tmp_path):
  root = write_label_tree(tmp_path / "data", {"train": {"a": 24, "b": 24}, "test": {"a": 4, "b": 4}})
  cache = tmp_path / "cache"
  first = _run(root, tmp_path / "one", cache)
  assert {"eval", "train_frozen", "train_finetune"} <= set(first["programs"])
  cached = _entries(cache)
  assert len(cached) >= 3
  second = _run(root, tmp_path / "two", cache)  # another workdir: a path must not enter a key
  assert _entries(cache) == cached
  assert set(second["programs"]) == set(first["programs"])
  assert second["first_step_s"] is None or second["first_step_s"] > 0
  epochs = second["epochs"]
  assert [e["phase"] for e in epochs] == ["frozen", "finetune", "finetune"]
  assert all(e["train_s"] > 0 and e["val_s"] > 0 for e in epochs)
  assert all(0 < e["host_cpu_s"] <= e["train_s"] + 0.05 for e in epochs)  # one thread's CPU time
  assert all("boundary_s" in e for e in epochs[:-1])
