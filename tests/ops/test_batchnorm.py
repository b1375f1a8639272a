"""jaxmed's fused BatchNorm(+activation) against Flax's nn.BatchNorm followed by the activation:
outputs, running-statistics updates and gradients, in training and inference mode."""

import jaxmed  # noqa: F401  (XLA flags before jax initialises)
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.models.layers import BatchNorm

ACT = {None: lambda z: z, "relu": nn.relu, "relu6": lambda z: jnp.clip(z, 0, 6)}


def _pair(activation, use_running_average, dtype=jnp.float32):
  ours = BatchNorm(use_running_average=use_running_average, momentum=0.9, epsilon=1e-3,
                   activation=activation, dtype=dtype)
  ref = nn.BatchNorm(use_running_average=use_running_average, momentum=0.9, epsilon=1e-3,
                     dtype=dtype)
  return ours, ref


def _variables(c, seed=0):
  rng = np.random.default_rng(seed)
  return {"params": {"scale": jnp.asarray(rng.normal(3, 0.5, c), jnp.float32),
                     "bias": jnp.asarray(rng.normal(0.5, 1, c), jnp.float32)},
          "batch_stats": {"mean": jnp.asarray(rng.normal(0, 1, c), jnp.float32),
                          "var": jnp.asarray(rng.uniform(0.5, 2, c), jnp.float32)}}


def _run(module, activation, variables, x, g, is_ref):
  def loss(params, x):
    y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              mutable=["batch_stats"])
    if is_ref:
      y = ACT[activation](y)
    return jnp.sum(y.astype(jnp.float32) * g), (y, updates)

  (_, (y, updates)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
      variables["params"], x)
  return y, updates["batch_stats"], grads


@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("use_running_average", [False, True])
def test_matches_flax(activation, use_running_average):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(0.3, 2.0, (4, 5, 6, 8)), jnp.float32)
  g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  variables = _variables(8)
  ours, ref = _pair(activation, use_running_average)
  y, stats, (dp, dx) = _run(ours, activation, variables, x, g, False)
  y_ref, stats_ref, (dp_ref, dx_ref) = _run(ref, activation, variables, x, g, True)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  for k in ("mean", "var"):
    np.testing.assert_allclose(stats[k], stats_ref[k], atol=1e-6, rtol=1e-6)
  if not use_running_average:  # the running averages moved towards the batch statistics
    assert not np.allclose(stats["mean"], variables["batch_stats"]["mean"])
  np.testing.assert_allclose(dx, dx_ref, atol=1e-5, rtol=1e-4)
  for k in ("scale", "bias"):
    np.testing.assert_allclose(dp[k], dp_ref[k], atol=1e-4, rtol=1e-4)
  if activation == "relu6":  # the clip is active somewhere, so the mask was exercised
    assert float(jnp.max(y)) == 6.0 and float(jnp.min(y)) == 0.0


def test_bfloat16_input_keeps_float32_statistics():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(0.3, 2.0, (4, 5, 6, 8)), jnp.bfloat16)
  g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  variables = _variables(8)
  ours, ref = _pair("relu", False, jnp.bfloat16)
  y, stats, (dp, dx) = _run(ours, "relu", variables, x, g, False)
  y_ref, stats_ref, (dp_ref, dx_ref) = _run(ref, "relu", variables, x, g, True)
  assert y.dtype == jnp.bfloat16 and dx.dtype == jnp.bfloat16
  assert stats["mean"].dtype == jnp.float32 and dp["scale"].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), atol=0.05)
  np.testing.assert_allclose(stats["var"], stats_ref["var"], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(dx, np.float32), np.asarray(dx_ref, np.float32), atol=0.05)
  np.testing.assert_allclose(dp["scale"], dp_ref["scale"], rtol=2e-2, atol=0.05)


def test_init_does_not_move_running_statistics():
  x = jnp.ones((2, 3, 3, 4)) * 5.0
  variables = BatchNorm(use_running_average=False).init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(4))
  np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(4))
