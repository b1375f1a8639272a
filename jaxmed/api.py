"""The Python API: what the command lines do, as functions for notebooks and scripts.

  import jaxmed
  cfg = jaxmed.config("brain_tumor_mri")         # a shipped config by name, or a path
  cfg.data.root = "/kaggle/input/brain-tumor-mri-dataset"
  jaxmed.doctor(cfg.data.root)                   # duplicates, leakage, imbalance, what to do
  run = jaxmed.fit(cfg, workdir="runs/mri")      # trains, or resumes what runs/mri holds
  run.show(); run.gradcam()                      # curves, confusion matrices, Grad-CAM inline
  jaxmed.evaluate("runs/mri", tta=4)
  jaxmed.predict(["scan.png"], workdir="runs/mri")

`fit` writes the same workdir as `python -m jaxmed.train` and reaches the same parameters
(`final_params_sha256`) for the same config. Every function imports its heavy parts when called.
"""

import os
import signal
import subprocess as subprocess_lib
import sys
import time
from pathlib import Path

from jaxmed.reporting.notebook import DoctorReport, EvalResult, Predictions, Run
from jaxmed.runtime.cli import UserError


def config(spec: str):
  """The ml_collections ConfigDict of a shipped config (`demo`, `brain_tumor_mri`, `chest_xray`,
  `alzheimer_mri`, `blood_cells`, `tpu`, `multi_gpu`, ...) or of a .py file; `NAME:ARG` passes
  ARG to get_config (`tpu:chest_xray`). Edit it, then pass it to `fit`."""
  from jaxmed.runtime import config_files
  return config_files.load(spec)


def demo_data() -> Path:
  """The demo's synthetic phantom dataset (generated on first use), as a label-folder tree."""
  from jaxmed.data import synthetic
  return synthetic.ensure_demo_dataset(Path(config("demo").data.root).expanduser())


def _default_workdir(cfg) -> Path:
  name = Path(str(cfg.data.root)).name or "run"
  return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def fit(cfg, workdir=None, *, subprocess: bool = False, overwrite: bool = False) -> Run:
  """Trains `cfg` (a ConfigDict or a config spec) into `workdir` and returns the Run; with a
  checkpoint in `workdir` (a notebook that disconnected) it resumes. `subprocess=True` runs
  `python -m jaxmed.train` in a child process, streaming its output here: on a CPU that process
  gets the fast allocator a running kernel cannot (see README, "On a CPU"). A workdir holding
  this config's finished run returns it without training; one holding another config's run or
  other files is refused unless `overwrite` (jaxmed's own files there are then replaced)."""
  if isinstance(cfg, (str, os.PathLike)):
    cfg = config(str(cfg))
  workdir = Path(workdir) if workdir is not None else _default_workdir(cfg)
  if (workdir / "summary.json").exists() and not overwrite:
    # A notebook run again top to bottom after training finished: the same config's run is
    # returned as it is (the command line refuses instead, so a script never mistakes it).
    from jaxmed.training.workdir import check_resumable
    check_resumable(workdir, cfg)
    print(f"{workdir} holds this config's finished run; loading it (overwrite=True trains again)")
    return Run.load(workdir)
  if subprocess:
    _fit_in_subprocess(cfg, workdir, overwrite)
    return Run.load(workdir)
  from absl import logging as absl_logging
  from jaxmed.training import loop
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  workdir, _ = loop.fit(cfg, workdir, config_name=workdir.name, overwrite=overwrite)
  return Run.load(workdir)


def _fit_in_subprocess(cfg, workdir: Path, overwrite: bool):
  """`python -m jaxmed.train` on `cfg` (written as a config file beside the workdir)."""
  workdir.parent.mkdir(parents=True, exist_ok=True)
  config_file = workdir.parent / f".{workdir.name}.config.py"
  config_file.write_text("import ml_collections\n\n\ndef get_config():\n"
                         f"  return ml_collections.ConfigDict({cfg.to_dict()!r})\n")
  command = [sys.executable, "-u", "-m", "jaxmed.train", "--config", str(config_file),
             "--workdir", str(workdir)] + (["--overwrite"] if overwrite else [])
  status = None
  try:
    with subprocess_lib.Popen(command, stdout=subprocess_lib.PIPE, stderr=subprocess_lib.STDOUT,
                              text=True, bufsize=1) as child:
      try:
        _echo(child)
      except KeyboardInterrupt:  # the kernel's stop button: the child checkpoints, then stops
        child.send_signal(signal.SIGTERM)
        _echo(child)  # its last lines ("stopped at step N ...")
        raise
      status = child.wait()
  finally:
    config_file.unlink(missing_ok=True)
  if status == 2:
    raise UserError("python -m jaxmed.train refused the run: its error line is above")
  if status:
    raise RuntimeError(f"python -m jaxmed.train exited with status {status} (output above)")


def _echo(child):
  for line in child.stdout:
    print(line, end="", flush=True)


def crossval(cfg, workdir, folds: int = 5, group_regex: str | None = None) -> dict:
  """`python -m jaxmed.crossval`: one training per fold in WORKDIR/fold-K (resumable), the
  out-of-fold metrics with bootstrap intervals and the fold ensemble on test; returns
  WORKDIR/cv_summary.json's content."""
  if isinstance(cfg, (str, os.PathLike)):
    cfg = config(str(cfg))
  from absl import logging as absl_logging
  from jaxmed.training.crossval import run_crossval
  absl_logging.set_verbosity(absl_logging.WARNING)
  return run_crossval(cfg, workdir, folds, group_regex)


def load_run(workdir) -> Run:
  """The Run of a finished workdir (after a disconnect, or one trained from the command line)."""
  return Run.load(workdir)


def evaluate(workdir, data: str | None = None, split: str = "test", tta: int = 1,
             checkpoint: str = "best", name: str | None = None, calibrate: bool = False,
             target: tuple[str, float] | None = None) -> EvalResult:
  """`python -m jaxmed.evaluate`: metrics with bootstrap intervals, calibration and every
  prediction, on the run's own split or on another folder `data` with the same classes; also
  written to WORKDIR/eval/<name>.json. `calibrate`: a temperature fitted on validation;
  `target`: ('sensitivity' or 'specificity', 0.95) picks each class's threshold on validation."""
  from jaxmed.evaluation.evaluator import evaluate_workdir
  result, out = evaluate_workdir(workdir, data, split, tta, checkpoint, name, calibrate, target)
  return EvalResult(result, path=str(out))


def predict(paths, workdir=None, bundle=None, checkpoint: str = "best",
            gradcam_dir=None, batch_size: int = 32) -> Predictions:
  """`python -m jaxmed.predict`: one record per image file (folders and archives expanded)."""
  from jaxmed.evaluation.inference import load_predictor, predict_files
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  predictor = load_predictor(workdir, bundle, checkpoint)
  return Predictions(predict_files(predictor, list(paths), batch_size, gradcam_dir),
                     predictor.classes)


def doctor(path, **options) -> DoctorReport:
  """`python -m jaxmed.doctor`: counts, unreadable files, duplicates and leakage across splits,
  imbalance, a train/test shift score, and what to do about each."""
  from jaxmed.data.doctor import examine
  return DoctorReport(examine(str(Path(path).expanduser()), **options))
