"""Multi-process data parallelism, for real: two `python -m jaxmed.train` processes joined by
jax.distributed.initialize on localhost, each with 2 simulated CPU devices (4 global devices),
talking over gloo, JAX's CPU collectives."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from test_resume import REPO, _command, _run, assert_same_final_state

LENET = "--config.model.arch=lenet"  # well-conditioned across summation orders, see test_resume


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_two(root, workdir, *extra) -> list[subprocess.Popen]:
  port = _free_port()
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
  return [subprocess.Popen(_command(root, workdir, LENET, *extra), cwd=REPO, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env={**os.environ, "XLA_FLAGS": flags,
                                "JAXMED_COORDINATOR": f"localhost:{port}",
                                "JAXMED_NUM_PROCESSES": "2", "JAXMED_PROCESS_ID": str(i)})
          for i in range(2)]


def _finish(procs, timeout=300) -> list[str]:
  try:
    return [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  from conftest import write_label_tree
  return write_label_tree(tmp_path_factory.mktemp("data"),
                          {"train": {"a": 24, "b": 24, "c": 16}, "test": {"a": 4, "b": 4, "c": 4}})


def test_importing_train_leaves_the_backend_down():
  # jax.distributed.initialize refuses to run once any device array exists.
  code = ("import jax._src.xla_bridge as xb, jaxmed.train; "
          "assert not xb.backends_are_initialized(), 'importing jaxmed.train started the backend'")
  done = _run([sys.executable, "-c", code])
  assert done.returncode == 0, done.stderr


def test_two_processes_train_like_one_and_their_checkpoint_restores_here(data_root, tmp_path):
  one_dir, two_dir = tmp_path / "one", tmp_path / "two"
  short = "--config.finetune.epochs=1"  # one epoch per phase: both step programs, half the time
  done = _run(_command(data_root, one_dir, LENET, short))
  assert done.returncode == 0, done.stdout + done.stderr
  procs = _start_two(data_root, two_dir, short)
  outputs = _finish(procs)
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out
  assert "4 device(s)" in outputs[0] and "epoch 2 (finetune)" in outputs[0]
  assert "epoch 1" not in outputs[1]  # only process 0 prints and writes the run's files
  assert (two_dir / "summary.json").exists()
  assert len((two_dir / "metrics.jsonl").read_text().splitlines()) == 4  # not 8: one writer
  assert jax.device_count() == 1  # this process: the 2-process checkpoint restores on 1 device
  assert_same_final_state(one_dir, two_dir, atol=1e-5)


def test_sigterm_to_one_process_stops_both_with_one_checkpoint(data_root, tmp_path):
  procs = _start_two(data_root, tmp_path)
  latest = tmp_path / "checkpoints" / "latest"
  deadline = time.time() + 300
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if latest.exists() and any(d.name.isdigit() for d in latest.iterdir()):
      break
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)  # a preemption notice that reached one host only
  outputs = _finish(procs)
  assert [p.returncode for p in procs] == [143, 143], outputs
  assert "checkpoint saved" in outputs[0] and "Traceback" not in outputs[0] + outputs[1]
