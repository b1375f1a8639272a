"""The streaming input path (jaxmed/data/stream.py, jaxmed/training/input_path.py): the same batches and
pixels as the device-resident path, the same trained parameters, the auto choice by memory budget,
resume mid-epoch, grain worker processes, two training processes, and unreadable files that do not
stop a run."""

import json
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType

from conftest import small_config, write_label_tree
from jaxmed.training import input_path
from jaxmed.training import loop as train
from jaxmed.data import discover, folder, sampling, stream
from test_resume import REPO, _command, _run, _sha, _start_and_signal

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """Train 12/12/8 (val carved from it), test 4/4/4 plus one file that does not decode."""
  root = write_label_tree(tmp_path_factory.mktemp("data"),
                          {"train": {"a": 12, "b": 12, "c": 8}, "test": {"a": 4, "b": 4, "c": 4}})
  (root / "test" / "b" / "broken.png").write_text("not a png")
  return root


def _feeds(root, balanced=False):
  config = small_config(root, arch="lenet")
  config.train.balanced_sampling = balanced
  mesh = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Auto,))
  feeds = []
  for path in ("resident", "stream"):
    _, splits, _ = discover.load_dataset(str(root), config.data.image_size, seed=0,
                                         val_fraction=0.15, decode=path == "resident")
    feeds.append(input_path.make_feed(path, splits, mesh, config, config.train.batch_size))
  return feeds


@pytest.mark.parametrize("balanced", [False, True])
def test_stream_gives_the_resident_batches_pixel_for_pixel(dataset, balanced):
  resident, streamed = _feeds(dataset, balanced)
  steps = len(resident.splits["train"]) // resident.batch_size
  for epoch, start in ((1, 0), (2, 0), (2, 2)):  # (2, 2): resumed two steps into epoch 2
    gathered = [(np.asarray(images)[np.asarray(index)], np.asarray(labels)[np.asarray(index)])
                for images, labels, index in resident.train_batches(epoch, start)]
    fed = [(np.asarray(x), np.asarray(y)) for x, y in streamed.train_batches(epoch, start)]
    assert len(gathered) == len(fed) == steps - start
    for (r_images, r_labels), (s_images, s_labels) in zip(gathered, fed):
      assert s_images.dtype == np.uint8 and np.array_equal(r_images, s_images)
      assert np.array_equal(r_labels, s_labels)


def test_a_resumed_epoch_decodes_only_its_remaining_batches(dataset, monkeypatch):
  _, streamed = _feeds(dataset)
  split = streamed.splits["train"]
  decoded, decode = [], folder.decode_image
  monkeypatch.setattr(folder, "decode_image", lambda p, size: decoded.append(p) or decode(p, size))
  batches = list(stream.train_batches(split, 0, 2, 8, 32, start_step=2))
  remaining = sampling.epoch_batches(0, 2, split.labels, 8, start_step=2)
  assert [b["index"].tolist() for b in batches] == remaining.tolist()
  assert sorted(decoded) == sorted(split.paths[i] for i in remaining.ravel())


def test_an_unreadable_file_takes_a_readable_example_of_its_batch(dataset):
  _, splits, _ = discover.load_dataset(str(dataset), 32, seed=0, val_fraction=0.15, decode=False)
  split = splits["test"]  # not decoded yet, so the broken file is still listed
  broken = next(i for i, p in enumerate(split.paths) if p.endswith("broken.png"))
  found = 0
  for batch in stream.train_batches(split, 0, 1, 4, 32):
    assert batch["image"].shape == (4, 32, 32, 3)
    for row in np.flatnonzero(batch["index"] == broken):
      found += 1
      assert "broken.png: cannot decode image" in batch["error"][row]
      others = [r for r in range(4) if r != row]
      assert any(np.array_equal(batch["image"][row], batch["image"][r]) and
                 batch["label"][row] == batch["label"][r] for r in others)
  assert found == 1


def test_stream_evaluation_matches_resident_and_leaves_out_unreadable_files(dataset):
  resident, streamed = _feeds(dataset)
  mean_rgb = lambda x: x.astype(np.float32).mean(axis=(1, 2))  # a stand-in model: 3 "logits"
  r_logits, r_labels = resident.predict(lambda p, bs, images, index: mean_rgb(images[index]),
                                        "test", None, None)
  s_logits, s_labels = streamed.predict(lambda p, bs, x: mean_rgb(x), "test", None, None)
  assert len(s_labels) == 12  # 13 files, 16-image batch padded, the broken one left out
  assert np.array_equal(r_labels, s_labels) and np.array_equal(r_logits, s_logits)
  assert len(streamed.unreadable) == 1 and "broken.png" in streamed.unreadable[0]


def test_auto_chooses_by_decoded_size_against_the_budget():
  data = ml_collections.ConfigDict(dict(image_size=224, input_path="auto",
                                        device_memory_budget_mb=2048.0))
  assert input_path.choose(data, 1000)["path"] == "resident"  # 1000 x 224 x 224 x 3 = 143.6 MiB
  data.device_memory_budget_mb = 100.0
  choice = input_path.choose(data, 1000)
  assert choice["path"] == "stream" and choice["decoded_bytes"] == 1000 * 224 * 224 * 3
  assert "over data.device_memory_budget_mb=100" in choice["reason"]
  data.input_path = "resident"  # an explicit setting wins over the budget
  assert input_path.choose(data, 1000)["path"] == "resident"
  data.input_path = "disk"
  with pytest.raises(ValueError, match="input_path"):
    input_path.choose(data, 1000)


def test_a_tiny_budget_streams_and_trains_to_the_resident_parameters(dataset, tmp_path, capsys):
  config = small_config(dataset, arch="lenet")  # the input path is under test, not the backbone
  config.frozen.epochs, config.finetune.epochs = 0, 2  # one phase: one train step to compile
  config.augment = {"preset": "mri"}  # augmentation inside the step, on both paths
  config.data.input_path = "resident"
  resident = train.train_and_evaluate(config, tmp_path / "resident")
  config.data.input_path = "auto"
  config.data.device_memory_budget_mb = 0.001
  capsys.readouterr()
  streamed = train.train_and_evaluate(config, tmp_path / "stream")
  out = capsys.readouterr().out
  assert "input path: stream (auto: 45 images decode to" in out
  assert "over data.device_memory_budget_mb=0.001" in out
  assert resident["data"]["input_path"]["path"] == "resident"
  assert streamed["data"]["input_path"]["path"] == "stream"
  assert streamed["final_params_sha256"] == resident["final_params_sha256"]
  # The broken test file: dropped while decoding (resident), left out while streaming.
  assert streamed["test"]["confusion_matrix"] == resident["test"]["confusion_matrix"]
  assert [m for m in streamed["data"]["skipped_files"] if "broken.png" in m]


def test_worker_processes_give_the_thread_batches(dataset):
  # grain's worker processes are spawned: they need a __main__ guard and parsed absl flags.
  script = (
      "import sys\n"
      "from absl import app\n"
      "from jaxmed.data import discover, stream\n"
      "def main(_):\n"
      f"  _, splits, _ = discover.load_dataset({str(dataset)!r}, 32, seed=0, val_fraction=0.15,"
      " decode=False)\n"
      "  for workers in (0, 2):\n"
      "    options = stream.StreamOptions(threads=1, workers=workers)\n"
      "    batches = stream.train_batches(splits['test'], 0, 1, 4, 32, options, start_step=1)\n"
      "    print([(b['index'].tolist(), int(b['image'].sum())) for b in batches])\n"
      "if __name__ == '__main__':\n"
      "  app.run(main)\n")
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  threads, workers = done.stdout.splitlines()[-2:]
  assert threads == workers and threads.count("[") > 2


def test_streamed_run_killed_mid_epoch_resumes_to_the_same_parameters(tmp_path):
  # An unreadable train file too: the streamed run finds it every epoch and carries on.
  root = write_label_tree(tmp_path / "data", {"train": {"a": 24, "b": 24, "c": 16},
                                              "test": {"a": 4, "b": 4, "c": 4}})
  (root / "train" / "a" / "broken.png").write_text("not a png")
  extra = ("--config.data.input_path=stream", "--config.model.arch=lenet",
           "--config.frozen.epochs=0")  # one phase: one train step to compile
  done = _run(_command(root, tmp_path / "full", *extra))
  assert done.returncode == 0, done.stdout + done.stderr
  assert "input path: stream (data.input_path='stream'" in done.stdout
  killed = tmp_path / "killed"
  proc, _ = _start_and_signal(root, killed, signal.SIGKILL, *extra)
  assert proc.returncode == -signal.SIGKILL
  resumed = _run(_command(root, killed, *extra))
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert "resuming from" in resumed.stdout
  assert _sha(killed) == _sha(tmp_path / "full")
  # Found before the kill or after the resume, the broken file is listed (the checkpoint keeps
  # what the stream found so far; a resumed run does not re-read the batches before it).
  skipped = [json.loads((d / "summary.json").read_text())["data"]["skipped_files"]
             for d in (tmp_path / "full", killed)]
  assert skipped[0] == skipped[1] and [m for m in skipped[0] if "broken.png" in m]


def test_two_processes_streaming_train_like_two_resident_processes(tmp_path):
  # Each process decodes the global batch and places its own devices' shards (distributed.put).
  from test_multiprocess import _finish, _start_two  # LeNet, 2 processes x 2 CPU devices
  root = write_label_tree(tmp_path / "data", {"train": {"a": 12, "b": 12, "c": 8},
                                              "test": {"a": 4, "b": 4, "c": 4}})
  short = ("--config.frozen.epochs=0", "--config.finetune.epochs=1")
  for path in ("resident", "stream"):
    procs = _start_two(root, tmp_path / path, f"--config.data.input_path={path}", *short)
    outputs = _finish(procs)
    for p, out in zip(procs, outputs):
      assert p.returncode == 0, out
    assert "4 device(s)" in outputs[0] and f"input path: {path}" in outputs[0]
  assert _sha(tmp_path / "stream") == _sha(tmp_path / "resident")
