"""No thread of a run imports beside the main thread, except orbax's import under its lock.

Python takes a submodule's import lock before its package's, so two threads importing the same
packages can deadlock; Python then raises _DeadlockError (CI, 2026-12-04: the program read-ahead
unpickled trees of flax and optax classes while `jaxmed.train` imported them). Two real runs of
`jaxmed.train` with a meta-path hook that records which thread first asks for each module: the
second run reads its programs ahead, writes TensorBoard events and checkpoints in the
background, and compiles ahead."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import write_label_tree

REPO = Path(__file__).resolve().parents[2]

_RECORDED_RUN = r"""
import json, sys, threading
asked = []
class Recorder:
  def find_spec(self, name, path=None, target=None):
    asked.append([threading.current_thread().name, name])
sys.meta_path.insert(0, Recorder())
from jaxmed import train
try:
  train.main(sys.argv[2:])
finally:
  print("ASKED", json.dumps([a for a in asked if a[0] != "MainThread"]))
  print("MAIN", len([a for a in asked if a[0] == "MainThread"]))
"""


def test_threads_beside_the_main_one_import_nothing_but_orbax(tmp_path):
  root = write_label_tree(tmp_path / "data", {"train": {"a": 16, "b": 16}, "test": {"a": 4, "b": 4}})
  for run in ("first", "second"):
    done = subprocess.run(
        [sys.executable, "-c", _RECORDED_RUN, "-", "--config", "tests/tiny_config.py",
         f"--config.data.root={root}", "--config.train.checkpoint_every_steps=2",
         f"--workdir={tmp_path / run}"], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "JAXMED_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines()
                 if line.startswith(("ASKED ", "MAIN ")))
    assert int(lines["MAIN"]) > 100  # the hook saw the main thread's imports
    others = json.loads(lines["ASKED"])
    assert {thread for thread, _ in others} <= {"jaxmed-import-orbax"}, [
        o for o in others if o[0] != "jaxmed-import-orbax"]
  summary = json.loads((tmp_path / "second" / "summary.json").read_text())
  assert summary["timings"]["programs_read_ahead"]  # the second run did read ahead
  assert list((tmp_path / "second" / "tensorboard").glob("events.out.tfevents.*"))
