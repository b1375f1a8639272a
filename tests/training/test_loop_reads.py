"""The loop's reads of dispatched steps' metrics (Phase._read): sums, padding and the NaN step."""

import io
import types

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.runtime.progress import Progress
from jaxmed.training import phase


def _phase_like(tmp_path):
  """What _read uses of a Phase: its name, position, checkpoints, job and progress."""
  ckpt = types.SimpleNamespace(latest=types.SimpleNamespace(latest_step=lambda: None,
                                                           directory=tmp_path))
  job = types.SimpleNamespace(config=types.SimpleNamespace(frozen=types.SimpleNamespace(epochs=0),
                                                           finetune=types.SimpleNamespace(epochs=2)),
                              steps_per_epoch=10)
  progress = Progress(20, 4, stream=io.StringIO())
  return types.SimpleNamespace(name="finetune", position=phase.Position(epoch=0, global_step=0),
                               ckpt=ckpt, job=job, progress=progress, read_marks=[])


def _dispatch(losses, correct, steps, first):
  return ({"loss": jnp.asarray(losses, jnp.float32), "correct": jnp.asarray(correct, jnp.int32)},
          steps, first)


def test_read_sums_consecutive_dispatches_and_drops_block_padding(tmp_path):
  # A single step (a scalar), then a block of 3 with its last row padding (steps=2).
  dispatched = [_dispatch(0.5, 3, 1, 4), _dispatch([0.25, 1.0, 7.0], [1, 2, 9], 2, 5)]
  like = _phase_like(tmp_path)
  sums = phase.Phase._read(like, dispatched, phase.EpochSums(1.0, 2, 4), 1)
  assert (sums.loss, sums.correct, sums.steps) == (1.0 + 0.5 + 0.25 + 1.0, 2 + 3 + 1 + 2, 7)
  assert [steps for steps, _ in like.read_marks] == [7]  # the epoch's steps read, and when


def test_read_step_ms_is_the_median_time_per_step_between_consecutive_reads():
  # Reads after 5, 10, 15 and 16 steps: 100 ms for 5 steps, 200 ms for 5, 20 ms for 1, so
  # 20, 40 and 20 ms per step; the time before the first read (the epoch's start) is not used.
  marks = [(5, 1.0), (10, 1.1), (15, 1.3), (16, 1.32)]
  assert phase.read_step_ms(marks) == pytest.approx(20.0)
  assert phase.read_step_ms([(3, 0.5), (3, 0.6), (8, 0.7)]) == pytest.approx(20.0)  # 0 steps: no
  assert phase.read_step_ms([(5, 1.0)]) is None  # a single read: no interval


def test_read_names_the_first_step_whose_loss_is_not_finite(tmp_path):
  # Global steps 11..13 are dispatched as 11, then 12-13: the NaN is the third step, step 13.
  dispatched = [_dispatch(0.5, 3, 1, 10), _dispatch([0.25, np.nan, np.inf], [1, 2, 0], 2, 11)]
  with pytest.raises(phase.TrainingDiverged, match=r"loss is nan at step 13 \(epoch 1"):
    phase.Phase._read(_phase_like(tmp_path), dispatched, phase.EpochSums(), 1)
