import jax
import jax.numpy as jnp
import numpy as np

from conftest import run_steps, small_config
from jaxmed.models import create_model
from jaxmed.runtime import settings


def test_bfloat16_compute_keeps_float32_parameters_and_learns():
  """'bfloat16' and, where the matrix unit pays (JAXMED_BFLOAT16=on stands in for such a probe),
  'auto' build a bfloat16 backbone; off, 'auto' is float32. One training run, through the
  bfloat16 GEMM convs (the stem's strided 3x3 by im2col): parameters and optimizer state stay
  float32 and it learns. (One run: a bfloat16 MobileNetV2 step compiles for ~50 s here.)"""
  config = small_config(None)
  for dtype, mode, expected in (("bfloat16", "off", jnp.bfloat16), ("auto", "off", jnp.float32),
                                ("auto", "on", jnp.bfloat16), ("float32", "on", jnp.float32)):
    config.model.dtype = dtype
    with settings.override(bfloat16=mode):
      assert create_model(config.model, 3).backbone.dtype == expected, (dtype, mode)
  with settings.override(bfloat16="on"):
    before, after, state = run_steps(0, num_steps=3, dtype="auto")
  for leaf in jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state):
    if hasattr(leaf, "dtype") and np.ndim(leaf) > 0:
      assert leaf.dtype == np.float32, leaf.dtype
  moved = [k for k in before if not np.array_equal(before[k], after[k])]
  assert moved and all(np.all(np.isfinite(after[k])) for k in after)
