"""The TPU and multi-GPU overlays, on a dataset config, train data-parallel over 8 devices (here
8 forced CPU devices): batch and eval batch split evenly, bf16 compute, one workdir."""

import json
import os
import subprocess
import sys

import pytest

from conftest import write_label_tree


@pytest.mark.parametrize("overlay", ["tpu", "multi_gpu"])
def test_overlay_on_a_dataset_config_runs_on_8_devices(tmp_path, overlay):
  root = write_label_tree(tmp_path / "data", {"train": {"a": 40, "b": 40}, "test": {"a": 8, "b": 8}},
                          size=32)
  env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                     " --xla_force_host_platform_device_count=8").strip()}
  done = subprocess.run(
      [sys.executable, "-m", "jaxmed.train", "--config", f"{overlay}:brain_tumor_mri",
       "--workdir", str(tmp_path / "run"), f"--config.data.root={root}",
       "--config.data.image_size=32", "--config.model.arch=lenet", "--config.model.weights=None",
       "--config.frozen.epochs=1", "--config.finetune.epochs=1"],
      capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  assert "8 device(s)" in done.stdout
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["config"]["model"]["dtype"] == "bfloat16"
  assert len(summary["machine"]["devices"]) == 8
  assert summary["config"]["train"]["batch_size"] % 8 == 0
