"""A run through a split manifest trains on exactly the same data as a run without it."""

import subprocess
import sys

from jaxmed.training import loop as train
from conftest import small_config, write_label_tree


def test_manifest_run_gives_the_same_final_parameters(tmp_path):
  root = write_label_tree(tmp_path / "data", {"train": {"a": 12, "b": 12}, "test": {"a": 3, "b": 3}})
  manifest = tmp_path / "split.jsonl"
  made = subprocess.run([sys.executable, "-m", "jaxmed.split", str(root), "--out", str(manifest),
                         "--seed", "0", "--val-fraction", "0.15"], capture_output=True, text=True)
  assert made.returncode == 0, made.stderr
  config = small_config(root, arch="lenet")  # the data path is under test, not the backbone
  config.finetune.epochs = 1
  plain = train.train_and_evaluate(config, tmp_path / "plain")
  config.data.manifest = str(manifest)
  pinned = train.train_and_evaluate(config, tmp_path / "pinned")
  assert pinned["data"]["counts"] == plain["data"]["counts"]
  assert pinned["final_params_sha256"] == plain["final_params_sha256"]
