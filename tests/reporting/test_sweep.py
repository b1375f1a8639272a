import json
import subprocess
import sys
from pathlib import Path

from conftest import write_label_tree

REPO = Path(__file__).resolve().parents[2]


def test_sweep_trains_each_backbone_and_writes_a_comparison(tmp_path):
  root = write_label_tree(tmp_path / "data", {"train": {"a": 12, "b": 12}, "test": {"a": 3, "b": 3}})
  config = tmp_path / "sweep_config.py"
  config.write_text(
      "import sys\nsys.path.insert(0, %r)\nimport tiny_config, ml_collections\n"
      "def get_config():\n  c = tiny_config.get_config()\n  c.finetune.epochs = 1\n"
      "  c.sweep = ml_collections.ConfigDict(dict(archs=('lenet',)))\n  return c\n"
      % str(REPO / "tests"))
  done = subprocess.run([sys.executable, "-m", "jaxmed.sweep", "--config", str(config),
                         f"--workdir={tmp_path / 'sweep'}", f"--config.data.root={root}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout + done.stderr
  summary = json.loads((tmp_path / "sweep" / "lenet" / "summary.json").read_text())
  assert summary["config"]["model"]["arch"] == "lenet"
  table = (tmp_path / "sweep" / "comparison.md").read_text()
  assert "lenet" in table


def test_sweep_by_cross_validation_compares_out_of_fold_metrics(tmp_path):
  root = write_label_tree(tmp_path / "data", {"train": {"a": 10, "b": 10}})
  config = tmp_path / "sweep_cv_config.py"
  config.write_text(
      "import sys\nsys.path.insert(0, %r)\nimport tiny_config, ml_collections\n"
      "def get_config():\n  c = tiny_config.get_config()\n  c.finetune.epochs = 1\n"
      "  c.sweep = ml_collections.ConfigDict(dict(archs=('lenet',), folds=2, weights='None'))\n"
      "  return c\n" % str(REPO / "tests"))
  done = subprocess.run([sys.executable, "-m", "jaxmed.sweep", "--config", str(config),
                         f"--workdir={tmp_path / 'sweep'}", f"--config.data.root={root}"],
                        cwd=REPO, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout + done.stderr
  cv = json.loads((tmp_path / "sweep" / "lenet" / "cv_summary.json").read_text())
  assert len(cv["folds"]) == 2 and cv["oof"]["num_examples"] == 20
  rows = json.loads((tmp_path / "sweep" / "comparison.json").read_text())
  assert rows[0]["split"] == "oof (2 folds)"
  assert rows[0]["accuracy"] == cv["oof"]["accuracy"]
  assert rows[0]["accuracy_ci95"] == cv["oof"]["ci95"]["accuracy"]
  table = (tmp_path / "sweep" / "comparison.md").read_text()
  assert "out-of-fold metrics" in table and f"{cv['oof']['accuracy']:.4f} [" in table
