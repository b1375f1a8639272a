import jax
import numpy as np

from conftest import run_steps


def test_bfloat16_compute_keeps_float32_parameters_and_learns():
  before, after, state = run_steps(0, num_steps=3, dtype="bfloat16")
  for leaf in jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state):
    if hasattr(leaf, "dtype") and np.ndim(leaf) > 0:
      assert leaf.dtype == np.float32, leaf.dtype
  moved = [k for k in before if not np.array_equal(before[k], after[k])]
  assert moved and all(np.all(np.isfinite(after[k])) for k in after)
