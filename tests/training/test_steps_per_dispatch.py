"""Several steps per dispatch (train.steps_per_dispatch = K, a lax.scan over K batches): the same
training as one step per dispatch, resumable mid-block after SIGKILL, and on 4 CPU devices.

Parameters are compared within 1e-6, not by hash: the scan body is compiled as a loop body, and
XLA may fuse and order its float32 arithmetic differently from the one-step program, so the last
bits can differ (measured: the first two steps' losses equal to the bit, 1e-7 after four); the
same K (same program) must reproduce the hash exactly. The network is LeNet: a random tiny
MobileNetV2 at 32 px normalises 1x1 maps over 8 values and amplifies any rounding difference step
after step (1e-3 apart after four steps), which would hide a real difference in the noise."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import signal_after_first_checkpoint, write_label_tree
from training.test_resume import assert_same_final_state

REPO = Path(__file__).resolve().parents[2]


def _command(root, workdir, *extra):
  return [sys.executable, "-m", "jaxmed.train", "--config", "tests/tiny_config.py",
          f"--config.data.root={root}", "--config.train.checkpoint_every_steps=5",
          "--config.model.arch=lenet", f"--workdir={workdir}", *extra]


def _train(root, workdir, *extra, env=None):
  done = subprocess.run(_command(root, workdir, *extra), cwd=REPO, capture_output=True, text=True,
                        timeout=600, env={**os.environ, **(env or {})})
  assert done.returncode == 0, done.stdout + done.stderr
  return done


def _summary(workdir):
  return json.loads((Path(workdir) / "summary.json").read_text())


def _train_losses(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  # 64 train images, 15 % carved for validation: 6 steps of 8 per epoch, so K=4 with a
  # checkpoint every 5 steps makes full, short (cut by a checkpoint) and epoch-end blocks.
  return write_label_tree(tmp_path_factory.mktemp("data"),
                          {"train": {"a": 24, "b": 24, "c": 16}, "test": {"a": 4, "b": 4, "c": 4}})


@pytest.fixture(scope="module")
def one_step(data_root, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("k1")
  console = _train(data_root, workdir, "--config.train.steps_per_dispatch=1").stdout
  (workdir / "console.txt").write_text(console)
  return workdir


@pytest.fixture(scope="module")
def four_steps(data_root, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("k4")
  console = _train(data_root, workdir, "--config.train.steps_per_dispatch=4").stdout
  (workdir / "console.txt").write_text(console)
  return workdir


def test_four_steps_per_dispatch_train_like_one(one_step, four_steps):
  assert_same_final_state(one_step, four_steps, atol=1e-6)
  np.testing.assert_allclose(_train_losses(four_steps), _train_losses(one_step), rtol=1e-5)
  one, four = _summary(one_step), _summary(four_steps)
  assert one["test"]["accuracy"] == four["test"]["accuracy"]
  steps = [e["steps"] for e in four["timings"]["epochs"]]
  assert steps == [6, 6, 6]  # every epoch trained all its steps
  # Each epoch is read at its checkpoint (step 5) and its end, or more often: a time per step
  # between two reads (benchmarks/fixed_costs.py's steady_step_ms).
  for summary in (one, four):
    assert all(0 < e["read_step_ms"] < e["train_s"] * 1e3 for e in summary["timings"]["epochs"])


def test_several_steps_per_dispatch_on_cpu_say_what_they_cost(one_step, four_steps):
  # On a CPU (as in CI) K > 1 runs the convolution gradients inside a loop body: the run says so.
  on_cpu = jax.default_backend() == "cpu"
  assert ("jax-ml/jax#12868" in (four_steps / "console.txt").read_text()) == on_cpu
  assert "jax-ml/jax#12868" not in (one_step / "console.txt").read_text()


def test_checkpoints_fall_at_the_same_steps(data_root, one_step, four_steps):
  # max_to_keep=1: the last mid-epoch checkpoint of the run was replaced by the epoch's; the
  # positions themselves are checked on Phase.dispatches below and by the SIGKILL test.
  for workdir in (one_step, four_steps):
    latest = Path(workdir) / "checkpoints" / "latest"
    assert [p.name for p in latest.iterdir() if p.name.isdigit()] == ["18"]


def test_sigkill_mid_block_then_resume_reproduces_the_run(data_root, four_steps, tmp_path):
  workdir = tmp_path / "killed"
  latest = workdir / "checkpoints" / "latest"
  signal_after_first_checkpoint(_command(data_root, workdir, "--config.train.steps_per_dispatch=4"),
                                latest, signal.SIGKILL, REPO)
  saved = sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())
  assert saved and (saved[0] % 5 == 0 or saved[0] % 6 == 0), saved  # every 5 steps or an epoch end
  resumed = _train(data_root, workdir, "--config.train.steps_per_dispatch=4")
  assert "resuming from" in resumed.stdout
  assert _summary(workdir)["final_params_sha256"] == _summary(four_steps)["final_params_sha256"]


def test_streamed_blocks_train_like_streamed_single_steps(data_root, tmp_path):
  stream = "--config.data.input_path=stream"
  _train(data_root, tmp_path / "s1", stream, "--config.train.steps_per_dispatch=1")
  _train(data_root, tmp_path / "s3", stream, "--config.train.steps_per_dispatch=3")
  assert_same_final_state(tmp_path / "s1", tmp_path / "s3", atol=1e-6)


def test_four_devices_with_blocks_train_like_one_device(data_root, one_step, tmp_path):
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
  done = _train(data_root, tmp_path / "four", "--config.train.steps_per_dispatch=4",
                env={"XLA_FLAGS": flags})
  assert "4 device(s)" in done.stdout
  # 4 devices sum each batch in another order than 1 (test_resume: within 1e-5)
  assert_same_final_state(one_step, tmp_path / "four", atol=1e-5)


class _Job:
  def __init__(self, steps_per_epoch):
    self.steps_per_epoch = steps_per_epoch


@pytest.mark.parametrize("block,start,global_step,every,expected", [
    (4, 0, 0, 0, [(0, 4), (4, 8), (8, 10)]),
    (4, 0, 0, 5, [(0, 4), (4, 5), (5, 9), (9, 10)]),
    (4, 3, 13, 5, [(3, 5), (5, 9), (9, 10)]),  # resumed mid-epoch at global step 13
    (1, 8, 8, 0, [(8, 9), (9, 10)]),
    (16, 0, 0, 0, [(0, 10)]),
    # Counted from the epoch's start (its own checkpoint), not from the run's: the second epoch
    # checkpoints after its 4th and 8th steps (global 14, 18), not at global 12 and 16.
    (4, 0, 10, 4, [(0, 4), (4, 8), (8, 10)]),
    (3, 0, 10, 20, [(0, 3), (3, 6), (6, 9), (9, 10)]),  # an epoch shorter than N: none
])
def test_dispatch_ranges_cover_the_epoch_and_end_at_checkpoints(block, start, global_step, every,
                                                                  expected):
  from jaxmed.training.phase import Phase, Position
  phase = Phase.__new__(Phase)
  phase.job, phase.block, phase.position = _Job(10), block, Position(0, global_step)
  ranges = phase.dispatches(start, every)
  assert ranges == expected
  assert ranges[0][0] == start and ranges[-1][1] == 10
  assert all(a < b and b == c for (a, b), (c, _) in zip(ranges, ranges[1:] + [(10, None)]))
  if every:  # every checkpoint step inside the epoch is a range end
    due = [s for s in range(start + 1, 10) if s % every == 0]
    assert set(due) <= {b for _, b in ranges}


def test_stack_block_pads_with_inactive_rows():
  from jaxmed.training.input_path import stack_block
  block, active = stack_block([np.array([1, 2]), np.array([3, 4])], 3)
  np.testing.assert_array_equal(block, [[1, 2], [3, 4], [0, 0]])
  np.testing.assert_array_equal(active, [True, True, False])
  with pytest.raises(ValueError):
    stack_block([np.array([1])] * 4, 3)
