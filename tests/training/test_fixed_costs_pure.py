"""benchmarks/fixed_costs.py's in-process half (--pure) drives jaxmed's own loop
(Phase._train_epoch) beside the bare step: it must keep working as the loop changes. It measures,
so only its shape is checked here, never a speed."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import write_label_tree

REPO = Path(__file__).resolve().parents[2]


def test_pure_measurement_runs_the_loop_beside_the_bare_step(tmp_path):
  # 64 train images, 15 % carved for validation: 6 steps of 8 per epoch, so two reads per epoch.
  root = write_label_tree(tmp_path / "data", {"train": {"a": 24, "b": 24, "c": 16},
                                              "test": {"a": 4, "b": 4, "c": 4}})
  done = subprocess.run(
      [sys.executable, "benchmarks/fixed_costs.py", "--pure", "tests/tiny_config.py",
       f"--config.data.root={root}", "--config.model.arch=lenet"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout + done.stderr
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert set(result) == {"frozen", "finetune"}
  for phase in result.values():
    assert phase["steps_per_epoch"] == 6
    for key in ("pure_step_ms", "pure_steady_step_ms", "in_process_step_ms", "val_ms"):
      assert phase[key] > 0, key
    # The ratio is the median of the loop's epochs over the passes just before them.
    assert phase["in_process_step_ratio"] > 0


def test_epoch_starts_times_each_epoch_with_and_without_checkpoints(tmp_path):
  """benchmarks/epoch_starts.py wraps the loop's epoch start and end and reads its read_marks:
  it must keep working as the loop changes."""
  root = write_label_tree(tmp_path / "data", {"train": {"a": 24, "b": 24, "c": 16},
                                              "test": {"a": 4, "b": 4, "c": 4}})
  done = subprocess.run(
      [sys.executable, "benchmarks/epoch_starts.py", "--runs", "1", "--json", str(tmp_path / "r.json"),
       "--", "--config", "tests/tiny_config.py", f"--config.data.root={root}",
       "--config.model.arch=lenet"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout + done.stderr
  results = json.loads((tmp_path / "r.json").read_text())["results"]
  assert set(results) == {"shipped", "no_checkpoints"}
  for runs in results.values():
    (epochs,) = runs
    assert [phase for phase, _, _ in epochs] == ["frozen", "finetune", "finetune"]
    assert all(first > 0 and later > 0 for _, first, later in epochs)
