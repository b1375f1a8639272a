"""A whole training run, top to bottom: set up the job, run the phases (frozen, then fine-tuning)
resuming from the workdir's last checkpoint, evaluate the best checkpoint on test, and write
summary.json and the report. Every file and checkpoint manager is closed on every way out."""

import contextlib
import json
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

from jaxmed.evaluation import metrics
from jaxmed.models.registry import compute_dtype
from jaxmed.runtime import distributed, run_info
from jaxmed.runtime.distributed import say
from jaxmed.runtime.cli import UserError
from jaxmed.runtime.interrupts import catch_stop_signals
from jaxmed.training import checkpoint, garbage_collection
from jaxmed.training import compile_ahead as compile_ahead_lib
from jaxmed.training import program_preload
from jaxmed.training.config_check import check_config
from jaxmed.training.job import prepare_job
from jaxmed.training.phase import (PHASES, Phase, Position, TrainingDiverged,  # noqa: F401
                                   TrainingStopped)
from jaxmed.training.phase_programs import compile_ahead, steps_per_dispatch
from jaxmed.training.workdir import (clear_run_files, prepare_workdir, read_history,
                                     undo_on_failure, write_json_atomic)


class MetricsLog:
  """metrics.jsonl and TensorBoard events (`tensorboard --logdir WORKDIR`), on the primary
  process; `history` holds every record of the run, resumed ones included. The events are
  written in the background thread (nothing in the run waits for them); close() waits until
  they are written."""

  def __init__(self, workdir: Path, history: list[dict]):
    self.history, self.workdir, self._writer, self._events = history, workdir, None, []
    self.file = distributed.primary_only(lambda: open(workdir / "metrics.jsonl", "a"))

  def write(self, records: list[dict]):
    for r in records:
      self.file.write(json.dumps(r) + "\n")
    self.file.flush()
    self.history += records
    if distributed.is_primary():
      if self._writer is None:  # imported on this thread: one importing beside it can deadlock
        from jaxmed.reporting.tensorboard import ScalarWriter  # (training/program_preload.py)
        self._writer = ScalarWriter(self.workdir / "tensorboard")
      self._events.append(compile_ahead_lib.Later(lambda: self._write_events(records)))

  def _write_events(self, records: list[dict]):
    for r in records:
      for key, value in r.items():
        if key not in ("epoch", "phase", "split") and value is not None:
          self._writer.add_scalar(f"{r['split']}/{key}", value, r["epoch"])
    self._writer.flush()

  def close(self):
    self.file.close()
    try:
      for event in self._events:
        event.result()
    finally:
      if self._writer is not None:
        self._writer.close()


def enable_compilation_cache():
  """JAX's persistent cache: a second run of the same config skips most of its compile time."""
  from jaxmed.runtime.paths import cache_dir
  jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
  # Every program, however quick to compile: small ones (a head's step, LeNet's) still cost
  # tracing plus a compile that the cache turns into a read.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def fit(config, workdir=None, *, config_name: str = "config",
        overwrite: bool = False) -> tuple[Path, dict]:
  """Trains `config` into `workdir` (default runs/<config_name>-<time>), resuming what a
  checkpoint there holds; returns the workdir and the summary (as summary.json). The config and
  the workdir are checked before anything is written (jaxmed.runtime.cli.UserError)."""
  check_config(config)
  if workdir is None and jax.process_count() > 1:  # each process would pick its own time stamp
    raise UserError("a multi-process run needs --workdir: a folder every process can reach")
  workdir, start_over = prepare_workdir(workdir, config_name, config, overwrite)
  distributed.barrier("workdir checked")  # before process 0 rewrites config.json
  say(f"workdir: {workdir}   devices: {jax.devices()}")
  return workdir, train_and_evaluate(config, workdir, start_over=start_over)


def start_workdir(workdir: Path, config, classes: list[str], start_over: bool):
  """The primary writes config.json and classes.json (clearing an earlier run's files first when
  `start_over`); every process then learns whether that worked, so none waits for the others."""
  problem = None
  if distributed.is_primary():
    try:
      workdir.mkdir(parents=True, exist_ok=True)
      if start_over:
        clear_run_files(workdir)
      (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
      write_json_atomic(workdir / "classes.json", {"classes": classes})
    except OSError as e:  # read-only, full, or not a folder
      problem = (f"--workdir {workdir}: cannot write there ({e.strerror or e}); pass a folder "
                 f"you can write to")
  if not distributed.primary_succeeded(problem is None):
    raise UserError(problem or f"--workdir {workdir}: process 0 could not write there")


def train_and_evaluate(config, workdir: Path, start_over: bool = False) -> dict:
  """Runs (or resumes) the whole job and returns the summary. Raises TrainingStopped after a stop
  signal (checkpoint saved) and TrainingDiverged on a NaN/Inf loss (last checkpoint kept). The
  data is loaded before the workdir is touched; a failure before the first checkpoint leaves the
  workdir as it was."""
  workdir = Path(workdir)
  primary = distributed.is_primary()  # with several processes, process 0 writes the files
  if config.train.get("compilation_cache", True):
    enable_compilation_cache()
  t0 = time.perf_counter()
  compile_ahead_lib.forget_waiting()  # an earlier run in this process that failed early
  program_preload.start(config)  # (jaxmed.train started it earlier, before its imports)
  # Orbax (0.3 s of imports) is first needed at the first checkpoint: imported meanwhile, while
  # the data is read (later, during the steps, it held the GIL the loop dispatches with).
  threading.Thread(target=checkpoint.orbax, name="jaxmed-import-orbax", daemon=True).start()
  job = prepare_job(config)
  with undo_on_failure(workdir, primary), contextlib.ExitStack() as stack:
    stack.callback(garbage_collection.thaw)  # the phases freeze what survives each epoch's start
    start_workdir(workdir, config, job.classes, start_over)
    ckpt = checkpoint.Checkpoints(workdir, config.train.checkpoint_metric, config.train.checkpoint_mode)
    stack.callback(ckpt.close)
    resume = ckpt.latest_meta()
    if resume:
      say(f"resuming from {ckpt.latest.directory} step {ckpt.latest.latest_step()}: phase "
          f"{resume['phase']}, {resume['epoch']} epochs done, {resume['step_in_epoch']} steps "
          f"into the next")
      ckpt.best_value = resume.get("best_value")
    log = MetricsLog(workdir, read_history(workdir, resume["epoch"] if resume else 0) if primary else [])
    stack.callback(log.close)
    position, rng = Position(), jax.random.PRNGKey(config.seed + 1)
    params, batch_stats = job.params, job.batch_stats
    to_run = [p for p in PHASES if config[p].epochs > 0]
    first = resume["phase_index"] if resume else 0
    for name in to_run[first + 1:]:  # later phases' train steps compile while the first trains
      job.ahead[f"train_{name}"] = compile_ahead(job, name)
    in_background = ["eval", *job.ahead]  # what the next run reads ahead (program_preload)
    with catch_stop_signals() as stop:  # only while training: a stop then saves a checkpoint
      for index, name in enumerate(to_run):
        if resume and index < resume["phase_index"]:
          continue
        job.params, job.batch_stats = params, batch_stats
        state = Phase(job, name, index, position, rng, ckpt, log, stop, resume).run()
        params, batch_stats, rng, resume = state.params, state.batch_stats, state.rng, None
    ckpt.wait()
    if first == 0:  # a resumed run has skipped loading some of them
      program_preload.remember(job.programs, config, in_background)
    if job.train_started is not None:  # first step to the last epoch's checkpoint written
      job.timings["loop_s"] = time.perf_counter() - job.train_started
    summary, evaluated = evaluate_and_summarize(job, ckpt, params, batch_stats)
    stack.close()  # checkpoints, metrics and TensorBoard files closed before the summary
  summary["timings"]["total_s"] = time.perf_counter() - t0
  if job.last_step_end is not None:  # the last epoch's boundary: to the result
    summary["timings"]["after_training_s"] = time.perf_counter() - job.last_step_end
  summary["timings"]["process_s"] = run_info.process_age_s()  # process start to the result
  if primary:
    write_json_atomic(workdir / "summary.json", summary)
    t_report = time.perf_counter()
    write_reports(workdir, log.history, summary, job, evaluated)
    summary["timings"]["report_s"] = time.perf_counter() - t_report
  return summary


def evaluate_and_summarize(job, ckpt, params, batch_stats) -> tuple[dict, dict]:
  """Test evaluation on the best checkpoint (Keras' ModelCheckpoint(save_best_only=True) habit)
  or the last parameters; returns the run's summary and the evaluated variables."""
  config = job.config
  final_sha = run_info.params_sha256({"params": params, "batch_stats": batch_stats})
  eval_params, eval_stats = params, batch_stats
  if config.train.evaluate == "best" and ckpt.best.latest_step() is not None:
    best, _ = checkpoint.restore(ckpt.best, {"params": params, "batch_stats": batch_stats})
    eval_params, eval_stats = best["params"], best["batch_stats"]
  results = {"val": job.evaluate("val", eval_params, eval_stats)}
  if "test" in job.splits and len(job.splits["test"]):
    results["test"] = job.evaluate("test", eval_params, eval_stats)
  final = results.get("test", results["val"])
  say(f"\n{'test' if 'test' in results else 'val'} set ({final['num_examples']} images, "
      f"{config.train.evaluate} checkpoint):\n" + metrics.format_table(final, job.classes))
  job.data_record["skipped_files"] += job.feed.unreadable  # found while streaming (stream path only)
  summary = {
      "classes": job.classes, **results, "data": job.data_record,
      "final_params_sha256": final_sha, "evaluated": config.train.evaluate,
      "best": {"metric": ckpt.metric, "value": ckpt.best_value},
      "precision": compute_dtype(config.model),
      "steps_per_dispatch": {"setting": str(config.train.get("steps_per_dispatch", "auto")),
                             "value": steps_per_dispatch(job)},
      "timings": job.timings, "versions": run_info.versions(), "machine": run_info.machine(),
      "config": config.to_dict(),
  }
  return summary, {"params": eval_params, "batch_stats": eval_stats}


def write_reports(workdir: Path, history: list[dict], summary: dict, job, evaluated: dict):
  """report/*.png and the self-contained report/index.html (from the primary process alone: the
  evaluated parameters are copied to the host first, so nothing waits for the other processes)."""
  from jaxmed.evaluation.trained_run import LoadedRun
  from jaxmed.reporting import html, plots
  split = "test" if "test" in summary else "val"
  plots.write_report(workdir, history, np.asarray(summary[split]["confusion_matrix"]),
                     summary["classes"])
  t0 = time.perf_counter()
  variables = jax.tree.map(  # replicated: every process holds the whole value
      lambda x: np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x), evaluated)
  run = LoadedRun(workdir, job.config, job.classes, job.model, variables, job.config.data.image_size)
  try:  # the run has finished and summary.json is written: a report problem must not undo that
    path = html.write_html_report(workdir, run=run, splits=job.splits)
  except Exception as e:  # noqa: BLE001
    print(f"warning: the HTML report failed ({type(e).__name__}: {e}); the run is complete; "
          f"python -m jaxmed.html_report --workdir {workdir} --debug retries it", file=sys.stderr)
    return
  say(f"report: {path} ({time.perf_counter() - t0:.1f} s)")
