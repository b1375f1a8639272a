"""Preemption safety and scale-out, run as real processes of `python -m jaxmed.train`:
SIGKILL mid-epoch then resume, SIGTERM saves and exits, 4 CPU devices match 1 device."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import signal_after_first_checkpoint, write_label_tree

REPO = Path(__file__).resolve().parents[2]


def _command(root, workdir, *extra):
  return [sys.executable, "-m", "jaxmed.train", "--config", "tests/tiny_config.py",
          f"--config.data.root={root}", "--config.train.checkpoint_every_steps=2",
          f"--workdir={workdir}", *extra]


def _run(args, env=None, **kw):
  return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env={**os.environ, **(env or {})}, **kw)


def _sha(workdir):
  return json.loads((Path(workdir) / "summary.json").read_text())["final_params_sha256"]


def _start_and_signal(root, workdir, sig, *extra):
  """Starts a run, waits for its first mid-epoch checkpoint, sends `sig`; returns the process."""
  return signal_after_first_checkpoint(_command(root, workdir, *extra),
                                       Path(workdir) / "checkpoints" / "latest", sig, REPO)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return write_label_tree(tmp_path_factory.mktemp("data"),
                          {"train": {"a": 24, "b": 24, "c": 16}, "test": {"a": 4, "b": 4, "c": 4}})


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("full")
  done = _run(_command(data_root, workdir))
  assert done.returncode == 0, done.stdout + done.stderr
  return workdir


def test_the_command_line_restarts_itself_with_the_faster_allocator(uninterrupted):
  import platform as stdlib_platform
  from jaxmed.runtime import platform as jp
  machine = json.loads((Path(uninterrupted) / "summary.json").read_text())["machine"]
  expected = jp.allocator_environment(os.environ, jp.transparent_hugepage_mode(),
                                      stdlib_platform.libc_ver(), jp.mimalloc_library(),
                                      jp.accelerator_plugin())
  expected = expected or os.environ
  assert machine["glibc_tunables"] == expected.get("GLIBC_TUNABLES")
  # read from the run's own /proc/self/maps: a preload that failed to load would show as glibc
  preloaded = "libmimalloc" in expected.get("LD_PRELOAD", "")
  assert machine["allocator"] == ("mimalloc" if preloaded else jp.loaded_allocator())
  assert machine["transparent_hugepages"] == jp.transparent_hugepage_mode()


def test_evaluate_and_predict_command_lines_restart_the_same_way(data_root, uninterrupted):
  from jaxmed.runtime import platform as jp
  preloaded = "libmimalloc" in (jp.allocator_environment(
      os.environ, jp.transparent_hugepage_mode(), __import__("platform").libc_ver(),
      jp.mimalloc_library(), jp.accelerator_plugin()) or {}).get("LD_PRELOAD", "")
  done = _run([sys.executable, "-m", "jaxmed.evaluate", f"--workdir={uninterrupted}", "--name=cli"])
  assert done.returncode == 0, done.stdout + done.stderr
  machine = json.loads((Path(uninterrupted) / "eval" / "cli.json").read_text())["machine"]
  assert machine["allocator"] == ("mimalloc" if preloaded else jp.loaded_allocator())
  image = next((Path(data_root) / "test" / "a").iterdir())
  done = _run([sys.executable, "-m", "jaxmed.predict", f"--workdir={uninterrupted}", "--format=json",
               str(image)])
  assert done.returncode == 0, done.stdout + done.stderr
  record = json.loads(done.stdout)[0]
  assert record["path"].endswith(image.name) and record["status"] == "ok"


def test_sigkill_mid_epoch_then_resume_gives_the_same_parameters(data_root, uninterrupted, tmp_path):
  workdir = tmp_path / "killed"
  proc, _ = _start_and_signal(data_root, workdir, signal.SIGKILL)
  assert proc.returncode == -signal.SIGKILL
  assert not (workdir / "summary.json").exists()
  resumed = _run(_command(data_root, workdir))
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert "resuming from" in resumed.stdout
  assert _sha(workdir) == _sha(uninterrupted)
  epochs = [json.loads(l)["epoch"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert epochs == [1, 1, 2, 2, 3, 3]  # no epoch logged twice


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_root, uninterrupted, tmp_path):
  workdir = tmp_path / "terminated"
  proc, out = _start_and_signal(data_root, workdir, signal.SIGTERM)
  assert proc.returncode == 143, out
  assert "checkpoint saved" in out and "Traceback" not in out
  resumed = _run(_command(data_root, workdir))
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert _sha(workdir) == _sha(uninterrupted)


def test_a_changed_config_does_not_resume_silently(data_root, uninterrupted, tmp_path):
  workdir = tmp_path / "changed"
  proc, _ = _start_and_signal(data_root, workdir, signal.SIGKILL)
  other = _run(_command(data_root, workdir, "--config.seed=5"))
  assert other.returncode != 0 and "another config" in other.stderr


def _final_state(workdir):
  """{'params': {path: array}, 'batch_stats': {...}} of the run's latest (packed) checkpoint."""
  from jaxmed.training import checkpoint
  manager = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints" / "latest")
  step = manager.latest_step()
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  leaves = checkpoint.read_leaves(manager, step, meta)
  manager.close()
  return {key: {n: a for n, a in leaves.items() if n.startswith(key + "/")}
          for key in ("params", "batch_stats")}


def assert_same_final_state(workdir_a, workdir_b, atol: float):
  """The latest checkpoints of two runs hold the same parameters and BN statistics within atol."""
  one, two = _final_state(workdir_a), _final_state(workdir_b)
  for key in ("params", "batch_stats"):
    a, b = jax.tree.leaves(one[key]), jax.tree.leaves(two[key])
    assert len(a) == len(b)
    worst = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
    assert worst <= atol, (key, worst)


def test_four_devices_train_like_one_and_their_checkpoint_restores_here(data_root, tmp_path):
  # LeNet, not the tiny MobileNetV2: at 32 px a random MobileNetV2's last maps are 1x1, BatchNorm
  # over 8 values amplifies float rounding step after step, and any two summation orders (one
  # device or four) drift apart; LeNet's BatchNorm sees 8x8..16x16 maps and stays well-conditioned.
  lenet = "--config.model.arch=lenet"
  one_dir, four_dir = tmp_path / "one", tmp_path / "four"
  done = _run(_command(data_root, one_dir, lenet))
  assert done.returncode == 0, done.stdout + done.stderr
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
  done = _run(_command(data_root, four_dir, lenet), env={"XLA_FLAGS": flags})
  assert done.returncode == 0, done.stdout + done.stderr
  assert "4 device(s)" in done.stdout
  assert jax.device_count() == 1  # this process: the 4-device checkpoint restores on 1 device
  assert_same_final_state(one_dir, four_dir, atol=1e-5)
