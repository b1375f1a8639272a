"""Precise BatchNorm (`train.precise_bn_batches`): before each validation, the moving statistics
of every BatchNorm that trains are recomputed with the epoch's final weights, as the average of
the training-mode mean and variance over N fixed training batches (Wu & Johnson, "Rethinking
'Batch' in BatchNorm", 2021; fvcore's `update_bn_stats`).

Why: a moving average with Keras' momentum (0.99; MobileNetV2 0.999) still holds much of its
initial value after a short run, and of weights that have since changed: a network trained from
scratch for a few hundred steps then evaluates on statistics that fit no version of itself, and
predicts one class for every image. The average over batches is what that moving average tends
to when the weights stop changing.

The batches are the training split's, in the fixed order of epoch 0 (training's epochs are
numbered from 1), unaugmented since the statistics serve evaluation, cut into the training batch
size because BatchNorm's statistics depend on it. Training itself is unchanged: a BatchNorm in
training mode normalises with its batch's statistics, so only what evaluation and the
checkpoints see changes. BatchNorms in inference mode during the phase (frozen stages,
`batchnorm='frozen'`) keep their statistics.
"""

import itertools
import time

import jax
import jax.numpy as jnp

from jaxmed.runtime import distributed


def enabled(config) -> int:
  """The number of batches of the pass; 0 when off."""
  return int(config.train.get("precise_bn_batches", 0) or 0)


class PreciseBatchNorm:
  """The phase's pass: `recompute(params, batch_stats)` -> batch_stats. The program (one batch's
  moments at the phase's BatchNorm modes) is compiled at the first call, through the job's
  program cache."""

  def __init__(self, job, feed, phase: str, options, num_batches: int):
    self.job, self.feed, self.phase, self.options = job, feed, phase, options
    self.num_batches = min(num_batches, job.steps_per_epoch)
    self.step, self.none_trains = None, False

  def _compile(self, params, batch_stats):
    job, feed = self.job, self.feed
    t = time.perf_counter()

    def make():
      return feed.make_moments_step(job.model, self.options)

    args = (params, batch_stats, *feed.example_batch())
    # Traced once to see whether any BatchNorm trains in this phase (frozen stages do not).
    self.none_trains = not jax.tree.leaves(jax.eval_shape(make(), *args))
    if not self.none_trains:
      parts = {**job.program_parts, "phase": self.phase, "feed": type(feed).__name__}
      self.step = job.programs.compile(f"bn_moments_{self.phase}", make, args, parts)
    job.timings["programs"][f"bn_moments_{self.phase}"] = time.perf_counter() - t

  def recompute(self, params, batch_stats):
    """batch_stats with the mean and var of each BatchNorm that trains replaced by their
    averages over the pass's batches (unchanged when none trains)."""
    if self.step is None and not self.none_trains:
      self._compile(params, batch_stats)
    if self.none_trains:
      return batch_stats
    total, count = None, 0
    for host_step in itertools.islice(self.feed.host_steps(0), self.num_batches):
      moments = self.step(params, batch_stats, *self.feed.step_args(host_step))
      total = moments if total is None else jax.tree.map(jnp.add, total, moments)
      count += 1
    average = jax.tree.map(lambda s: s / count, total)
    # placed as the train step's compiled program expects its state
    return distributed.put(replace_moments(batch_stats, average), self.job.replicated)


def replace_moments(batch_stats, moments):
  """batch_stats (nested dicts) with each leaf that `moments` has (same path) taken from it."""
  if not isinstance(moments, dict):
    return moments
  out = dict(batch_stats)
  for key, value in moments.items():
    if key not in batch_stats:
      raise KeyError(f"BatchNorm moments at {key!r} have no moving statistics to replace")
    out[key] = replace_moments(batch_stats[key], value)
  return out
