"""One training phase (frozen backbone, or fine-tuning): its optimizer, callbacks and compiled
step, then epochs of steps, each ended by validation, metrics and a checkpoint. Every checkpoint
records the data position (phase, epoch, step in epoch), so a killed run resumes mid-epoch."""

import dataclasses
import itertools
import statistics
import time

import jax
import numpy as np

from jaxmed.runtime import distributed, run_info
from jaxmed.runtime.distributed import say
from jaxmed.runtime.progress import Progress, format_seconds
from jaxmed.training import callbacks, checkpoint, garbage_collection, input_path
from jaxmed.training import precise_bn
from jaxmed.training import compile_ahead as compile_ahead_lib
from jaxmed.training.phase_programs import (initial_state, optimizer_init_program, phase_optimizer,
                                            steps_per_dispatch, train_program)

PHASES = ("frozen", "finetune")


class TrainingDiverged(RuntimeError):
  pass


class TrainingStopped(Exception):
  """A stop signal (SIGTERM, Ctrl-C) was honoured: a checkpoint was saved and the run can resume."""

  def __init__(self, signum: int, step: int):
    super().__init__(f"stopped at step {step}; checkpoint saved. Re-run the same command to resume.")
    self.exit_code = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


@dataclasses.dataclass
class EpochSums:
  """The epoch's training loss and correct predictions so far, summed over its steps."""
  loss: float = 0.0
  correct: int = 0
  steps: int = 0

  def plus(self, losses: np.ndarray, correct: np.ndarray) -> "EpochSums":
    """These sums plus the given steps' (host values)."""
    return EpochSums(self.loss + float(np.sum(losses, dtype=np.float64)),
                     self.correct + int(np.sum(correct)), self.steps + len(losses))

  def as_list(self) -> list:  # the checkpoint's `train_sums`
    return [self.loss, self.correct, self.steps]


@dataclasses.dataclass
class Position:
  """Where the whole run stands, carried from one phase to the next."""
  epoch: int = 0
  global_step: int = 0


def make_callbacks(phase_config):
  plateau = early = None
  if phase_config.get("reduce_on_plateau") and phase_config.reduce_on_plateau.enabled:
    p = phase_config.reduce_on_plateau
    plateau = callbacks.ReduceLROnPlateau(p.factor, p.patience, p.get("min_scale", 0.0),
                                          p.get("cooldown", 0), p.get("min_delta", 1e-4),
                                          p.monitor, p.mode)
  if phase_config.get("early_stopping") and phase_config.early_stopping.enabled:
    e = phase_config.early_stopping
    early = callbacks.EarlyStopping(e.patience, e.get("min_delta", 0.0), e.monitor, e.mode)
  return plateau, early


def check_finite(losses, first_step: int, phase: str, epoch: int, ckpt):
  """Raises naming the first step whose loss is NaN/Inf; the last checkpoint stays as it was."""
  values = np.asarray(losses, np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if len(bad):
    step = first_step + int(bad[0]) + 1
    saved = ckpt.latest.latest_step()
    kept = (f"The last good checkpoint (step {saved}) is kept in {ckpt.latest.directory}."
            if saved is not None else "No checkpoint was written yet: the workdir is left as it was.")
    raise TrainingDiverged(
        f"loss is {values[bad[0]]} at step {step} (epoch {epoch}, phase {phase}). Likely causes: "
        f"learning rate too high for this phase, images that decode to constant or extreme "
        f"values, or mixed precision overflow. {kept}")


def read_step_ms(marks: list) -> float | None:
  """The median over an epoch's consecutive reads of the time per step between them, in ms.
  The device computes the steps between two reads back to back, so this is the loop's steady step
  time, its reads, progress and mid-epoch checkpoints included, but not the epoch's start (the
  queue filling, a phase's first run); a burst of another process on the machine moves a median
  less than the epoch's mean (benchmarks/fixed_costs.py compares it with the pure step's)."""
  per_step = [(t1 - t0) / (s1 - s0) * 1e3 for (s0, t0), (s1, t1) in zip(marks, marks[1:])
              if s1 > s0]
  return statistics.median(per_step) if per_step else None


class Phase:
  """Runs one phase of `job` from a fresh start or from the checkpoint meta `resume`."""

  def __init__(self, job, name: str, index: int, position: Position, rng, ckpt, log, stop,
               resume: dict | None):
    self.job, self.name, self.index, self.position = job, name, index, position
    self.ckpt, self.log, self.stop = ckpt, log, stop
    self.config = job.config[name]
    self.options, self.labels_tree, self.tx, self.schedule = phase_optimizer(job, name)
    self.plateau, self.early = make_callbacks(self.config)
    self.agree_to_stop = distributed.StopAgreement()  # all processes checkpoint at one step
    self.state = distributed.put(
        initial_state(job, self.tx, position.global_step, rng, self._optimizer_init()),
        job.replicated)
    self.start_epoch, self.start_step, self.sums, self.stopped = 1, 0, EpochSums(), False
    self.block = steps_per_dispatch(job)
    if resume:  # this is the phase the checkpoint was written in
      self._restore()

  def _optimizer_init(self):
    ahead = self.job.ahead.pop(f"optimizer_init_{self.name}", None)
    if ahead is not None:  # compiled (or loaded) in the background meanwhile
      return ahead.result()
    t_compile = time.perf_counter()
    program = optimizer_init_program(self.job, self.name, self.tx)
    self.job.timings["programs"][f"optimizer_init_{self.name}"] = time.perf_counter() - t_compile
    self.job.timings["compile_s"] += time.perf_counter() - t_compile
    return program

  def _restore(self):
    self.state, meta = checkpoint.restore(self.ckpt.latest, self.state)
    self.position.epoch, self.position.global_step = meta["epoch"], meta["global_step"]
    self.start_epoch, self.start_step = meta["epoch_in_phase"] + 1, meta["step_in_epoch"]
    self.sums, self.stopped = EpochSums(*meta["train_sums"]), meta["stopped"]
    self.job.feed.unreadable[:] = meta.get("unreadable_files", [])  # found while streaming so far
    if self.plateau:
      self.plateau.load_state_dict(meta["plateau"])
    if self.early:
      self.early.load_state_dict(meta["early_stopping"])

  def meta(self, epoch_in_phase: int, step_in_epoch: int, sums: EpochSums, stopped=False) -> dict:
    """What a checkpoint records beside the train state."""
    return {"phase": self.name, "phase_index": self.index, "epoch": self.position.epoch,
            "epoch_in_phase": epoch_in_phase, "step_in_epoch": step_in_epoch,
            "global_step": self.position.global_step, "train_sums": sums.as_list(),
            "stopped": stopped,
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "early_stopping": self.early.state_dict() if self.early else None,
            "unreadable_files": self.job.feed.unreadable}

  def _compile(self):
    """The phase's feed (cached backbone features when the backbone is frozen and nothing is
    augmented), its eval step and its ahead-of-time compiled train step."""
    job = self.job
    self.feed, self.eval_step = job.feed, job.eval_step
    if self.name == "frozen" and job.augment is None and job.config.train.get("cache_features", True) \
        and isinstance(job.feed, input_path.ResidentFeed):
      # The backbone is fixed for the whole phase: run it once per image, train the head.
      t_features = time.perf_counter()
      self.feed = input_path.FeatureFeed(
          job.feed, job.model, job.params, job.batch_stats,
          lambda name, make, args: job.programs.compile(name, make, args, job.program_parts))
      t_eval = time.perf_counter()
      eval_args = (job.params, job.batch_stats, *self.feed.example_eval_batch())
      self.eval_step = job.programs.compile(
          "eval_features", lambda: self.feed.make_eval_step(job.model), eval_args,
          {**job.program_parts, "feed": type(self.feed).__name__})
      job.timings["programs"]["eval_features"] = time.perf_counter() - t_eval
      job.timings["features_s"] = time.perf_counter() - t_features
      say(f"phase frozen trains the head on cached backbone features ({self.feed.nbytes / 2**20:.1f}"
          f" MB, computed in {format_seconds(job.timings['features_s'])}; train.cache_features)")
    self.precise_bn = None
    if precise_bn.enabled(job.config) and self.options.bn_train \
        and not isinstance(self.feed, input_path.FeatureFeed):  # cached features: no BatchNorm trains
      self.precise_bn = precise_bn.PreciseBatchNorm(job, self.feed, self.name, self.options,
                                                    precise_bn.enabled(job.config))
    ahead = job.ahead.pop(f"train_{self.name}", None)
    if ahead is not None and self.feed is job.feed:  # compiled in the background meanwhile
      self.train_step = ahead.result()
      return
    t_compile = time.perf_counter()  # ahead-of-time compile, so compile time is reported apart
    self.train_step = train_program(self.feed, job, self.name, self.tx, self.options, self.block,
                                    self.state)
    job.timings["programs"][f"train_{self.name}"] = time.perf_counter() - t_compile
    job.timings["compile_s"] += time.perf_counter() - t_compile

  def run(self):
    """Trains the phase's remaining epochs; returns the final TrainState."""
    job = self.job
    self._compile()
    num_trainable = sum(x.size for x, l in zip(jax.tree.leaves(job.params),
                                               jax.tree.leaves(self.labels_tree)) if l == "trainable")
    say(f"phase {self.name}: {self.config.epochs} epochs x {job.steps_per_epoch} steps, batch "
        f"{job.batch_size}, {num_trainable:,} trainable parameters, {jax.device_count()} device(s)")
    if self.block > 1 and jax.default_backend() == "cpu":  # phase_programs: AUTO_STEPS_PER_DISPATCH
      say(f"note: train.steps_per_dispatch={self.block} on a CPU runs each block as a loop, inside "
          f"which XLA computes convolution gradients 25-140x slower (jax-ml/jax#12868); 'auto' "
          f"(1 on a CPU) is faster here")
    self.progress = Progress(self.config.epochs * job.steps_per_epoch, job.batch_size,
                             stream=None if distributed.is_primary() else distributed.Discard())
    for epoch_in_phase in range(self.start_epoch, self.config.epochs + 1):
      if self.stopped:
        break
      self._train_epoch(epoch_in_phase)
    return self.state

  def dispatches(self, start_step: int, every: int) -> list[tuple[int, int]]:
    """The epoch's steps from `start_step` as (first, stop) ranges of at most `self.block` steps,
    one dispatch each; a range also ends where a mid-epoch checkpoint is due, so checkpoints fall
    at the same steps for every K. Those are due every `checkpoint_every_steps` steps counted from
    the epoch's start, which has its own checkpoint: an epoch of fewer steps writes none (the
    demo's 21-step epochs wrote 5 in a run, each one on the critical path)."""
    ranges, first = [], start_step
    while first < self.job.steps_per_epoch:
      stop = min(self.job.steps_per_epoch, first + self.block)
      if every:
        stop = min(stop, first + every - first % every)
      ranges.append((first, stop))
      first = stop
    return ranges

  def _train_epoch(self, epoch_in_phase: int):
    job, pos = self.job, self.position
    every = job.config.train.get("checkpoint_every_steps", 0)
    # No full collection mid-epoch (the run's first settle, ~0.1 s, is part of its time to the
    # first step: before it, the start-up's objects are all there is to freeze).
    job.timings["gc_s"] = job.timings.get("gc_s", 0.0) + garbage_collection.settle()
    t_epoch, host_epoch = time.perf_counter(), time.thread_time()
    scale = np.float32(self.plateau.scale if self.plateau else 1.0)
    sums, in_flight = self.sums, []  # in_flight: dispatched, not yet read (metrics, steps, first)
    self.read_marks = []  # (steps read, time) at each read: the steady step time, see read_step_ms
    # Read the metrics of all dispatches but the newest, so the device always has work queued;
    # with one step per dispatch, every 5 steps (a read waits for the steps it reads).
    read_after = max(2, 5 // self.block + 1)
    host_steps = self.feed.host_steps(pos.epoch + 1, self.start_step)  # the saved data position
    first_steps = job.timings.setdefault("phase_first_step_s", {})
    for first, stop in self.dispatches(self.start_step, every):
      batch = list(itertools.islice(host_steps, stop - first))
      if first == self.start_step:
        self._note_epoch_start()
      args = (self.feed.step_args(batch[0]) if self.block == 1 else
              self.feed.block_args(batch, self.block))
      self.state, metrics = self.train_step(self.state, *args, scale)
      for value in metrics.values():
        value.copy_to_host_async()  # read later without waiting for a transfer
      in_flight.append((metrics, stop - first, pos.global_step))
      pos.global_step += stop - first
      if self.name not in first_steps:  # one extra wait per phase: its first step's one-off cost
        jax.block_until_ready(metrics)
        # The first run of a program: XLA's CPU libraries generate their kernels (oneDNN,
        # YNNPACK) and new memory is touched, 0.3-0.6 s for the demo's fine-tuning step against
        # its 80 ms (2-core CPU, 2026-12-04); step_ms in benchmarks/fixed_costs.py leaves it out.
        first_steps[self.name] = time.perf_counter() - t_epoch
      if "first_step_s" not in job.timings:  # the run's first step: its time to first step
        job.timings["first_step_s"] = run_info.process_age_s()
        job.timings["first_step_unix"] = time.time()
        job.timings["first_step_in_epoch_s"] = first_steps[self.name]
        compile_ahead_lib.start_all()  # the later programs compile while this phase trains
      if len(in_flight) >= read_after:
        sums = self._read(in_flight[:-1], sums, epoch_in_phase)
        in_flight = in_flight[-1:]
      stop_now = self.agree_to_stop(self.stop, pos.global_step)
      if stop_now or (every and stop % every == 0 and stop < job.steps_per_epoch):
        sums, in_flight = self._read(in_flight, sums, epoch_in_phase), []  # no NaN saved
        self.ckpt.save_latest(pos.global_step, self.state, self.meta(epoch_in_phase - 1, stop, sums))
        if stop_now:
          self.ckpt.wait()
          self.progress.newline()
          raise TrainingStopped(self.stop.signal or 15, pos.global_step)
    sums = self._read(in_flight, sums, epoch_in_phase)
    job.last_step_end = time.perf_counter()  # the read above waited for the last step
    train_s = job.last_step_end - t_epoch
    job.timings["train_s"] += train_s
    if job.timings["epochs"]:  # this thread's CPU time: the loop's host work, waits left out
      job.timings["epochs"][-1]["host_cpu_s"] = time.thread_time() - host_epoch
      job.timings["epochs"][-1]["read_step_ms"] = read_step_ms(self.read_marks)
    pos.epoch += 1
    self.start_step, self.sums = 0, EpochSums()
    self.progress.newline()
    self._end_epoch(epoch_in_phase, sums, train_s, scale)

  def _read(self, dispatched: list, sums: EpochSums, epoch_in_phase: int) -> EpochSums:
    """Fetches dispatched steps' losses and correct counts (padding dropped), checks the losses
    are finite, shows progress; returns the sums with them added."""
    if not dispatched:
      return sums
    # Wait, then copy: device_get on values still being computed took 2-3x the CPU time of the
    # two (LeNet 32 px, 2026-12-03: 0.4 against 0.17 ms per step of the loop's thread).
    jax.block_until_ready([metrics for metrics, _, _ in dispatched])
    fetched = jax.device_get([metrics for metrics, _, _ in dispatched])
    # The dispatches are consecutive steps (padding dropped): checked and summed as one.
    losses = np.concatenate([np.atleast_1d(values["loss"])[:steps]
                             for (_, steps, _), values in zip(dispatched, fetched)])
    correct = np.concatenate([np.atleast_1d(values["correct"])[:steps]
                              for (_, steps, _), values in zip(dispatched, fetched)])
    check_finite(losses, dispatched[0][2], self.name, self.position.epoch + 1, self.ckpt)
    sums = sums.plus(losses, correct)
    self.read_marks.append((sums.steps, time.perf_counter()))
    job = self.job
    total_epochs = job.config.frozen.epochs + job.config.finetune.epochs
    done = (epoch_in_phase - 1) * job.steps_per_epoch + sums.steps
    self.progress.update(f"epoch {self.position.epoch + 1}/{total_epochs} ({self.name})", done,
                         float(losses[-1]))
    return sums

  def _note_epoch_start(self):
    """Adds this epoch to timings['epochs']; the previous one gets its boundary time."""
    epochs, now = self.job.timings["epochs"], time.perf_counter()
    if self.job.train_started is None:
      self.job.train_started = now
    if epochs and self.job.last_step_end is not None:
      epochs[-1]["boundary_s"] = now - self.job.last_step_end
    epochs.append({"phase": self.name, "epoch": self.position.epoch + 1,
                   "steps": self.job.steps_per_epoch - self.start_step})

  def _end_epoch(self, epoch_in_phase: int, sums: EpochSums, train_s: float, scale):
    """Validation, metrics.jsonl/TensorBoard, callbacks and the epoch's checkpoint."""
    job, epoch = self.job, self.position.epoch
    train_loss, train_acc = sums.loss / sums.steps, sums.correct / (sums.steps * job.batch_size)
    if self.precise_bn is not None:  # before validation, so the epoch's checkpoint has them
      t_bn = time.perf_counter()
      self.state = self.state.replace(
          batch_stats=self.precise_bn.recompute(self.state.params, self.state.batch_stats))
      if self.job.timings["epochs"]:
        self.job.timings["epochs"][-1]["precise_bn_s"] = time.perf_counter() - t_bn
    t_val = time.perf_counter()
    val = job.evaluate("val", self.state.params, self.state.batch_stats, self.feed, self.eval_step)
    val_s = time.perf_counter() - t_val
    if self.job.timings["epochs"]:
      self.job.timings["epochs"][-1].update(train_s=train_s, val_s=val_s)
    rate = self.progress.images_per_second  # NaN for a one-step epoch: not valid JSON, so None
    lr = float(self.schedule(epoch_in_phase * job.steps_per_epoch - 1)) * float(scale)
    self.log.write([
        {"epoch": epoch, "phase": self.name, "split": "train", "loss": train_loss,
         "accuracy": train_acc, "lr": lr, "images_per_s": rate if rate == rate else None,
         "seconds": train_s},
        {"epoch": epoch, "phase": self.name, "split": "val", "loss": val["loss"],
         "accuracy": val["accuracy"], "macro_f1": val["macro_f1"], "auc": val["auc"]["macro"],
         "seconds": val_s}])
    monitored = {f"val_{k}": val[k] for k in ("accuracy", "loss", "macro_f1", "balanced_accuracy")}
    monitored["val_auc"] = val["auc"]["macro"]
    reduced = self.plateau.step(monitored) if self.plateau else False
    self.stopped = self.early.step(monitored) if self.early else False
    improved = self.ckpt.save(self.position.global_step, self.state,
                              self.meta(epoch_in_phase, 0, EpochSums(), self.stopped), monitored)
    say(f"epoch {epoch} ({self.name}): train loss {train_loss:.4f} acc {train_acc:.3f} | "
        f"val loss {val['loss']:.4f} acc {val['accuracy']:.3f} macro-F1 {val['macro_f1']:.3f}"
        f"{'  *best' if improved else ''}{'  lr reduced' if reduced else ''}"
        f"{'  early stop' if self.stopped else ''}")
