"""The CPU fast paths (1x1 GEMM, depthwise, Winograd) under GSPMD batch sharding (4 simulated devices) equal lax unsharded.

Runs in a subprocess: the device count is fixed when jax starts.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
  import jaxmed, jax, jax.numpy as jnp, numpy as np
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  from jaxmed.ops import conv, depthwise
  assert jax.device_count() == 4
  depthwise._chunk_size = lambda x: 2  # exercise the batch-chunk loop on sharded batches
  mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
  rng = np.random.default_rng(0)
  # 1x1 GEMM, depthwise (strides 1 and 2), Winograd (stride 1 only; stride 2 is lax's)
  for kshape, groups, strides in (((1, 1, 8, 12), 1, (1, 2)), ((3, 3, 8, 1), 8, (1, 2)),
                                  ((3, 3, 128, 128), 1, (1,))):
    for stride in strides:
      x = rng.normal(size=(8, 12, 12, kshape[2])).astype(np.float32)
      k = (rng.normal(size=kshape) / np.sqrt(np.prod(kshape[:3]))).astype(np.float32)
      y = conv.conv_reference(x, k, (stride, stride), "SAME", groups)
      g = rng.normal(size=y.shape).astype(np.float32)
      def grads(f):
        return jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) * g), argnums=(0, 1)))
      fast = lambda x, k: conv.conv2d(x, k, (stride, stride), "SAME", groups)
      ref = lambda x, k: conv.conv_reference(x, k, (stride, stride), "SAME", groups)
      assert "convolution" not in jax.jit(fast).lower(x, k).as_text()  # the fast path ran
      xs = jax.device_put(x, NamedSharding(mesh, P("data")))
      np.testing.assert_allclose(jax.jit(fast)(xs, k), y, atol=1e-5)
      (dx, dk), (dx_r, dk_r) = grads(fast)(xs, k), grads(ref)(x, k)
      np.testing.assert_allclose(dx, dx_r, atol=1e-5)
      np.testing.assert_allclose(dk, dk_r, atol=1e-5 * float(jnp.max(jnp.abs(dk_r))))
  print("ok")
""")


def test_fast_convs_under_batch_sharding_match_lax():
  env = dict(os.environ, JAXMED_CONV_IMPL="fast",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
  result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
