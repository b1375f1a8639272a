"""Each CPU fast path runs only on the jaxlib versions where it measured faster than XLA's own op
(ops/base.MEASURED_FASTER, from benchmarks/fastpath_ab.py): the nearest older measured version
decides for an unmeasured one, the oldest for anything older."""

import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest

from jaxmed.ops import base, conv, pointwise
from jaxmed.runtime import settings


def test_the_nearest_older_measurement_decides(monkeypatch):
  monkeypatch.setitem(base.MEASURED_FASTER, "pointwise", {"0.10": True, "0.12": False})
  assert base.measured_verdict("pointwise", "0.10.2")
  assert base.measured_verdict("pointwise", "0.11.2")   # nearest older: 0.10
  assert not base.measured_verdict("pointwise", "0.12.0.1")
  assert not base.measured_verdict("pointwise", "0.13.0")  # nearest older: 0.12
  assert base.measured_verdict("pointwise", "0.9.0")    # older than all: the oldest


def test_every_fast_path_has_a_measurement():
  assert set(base.MEASURED_FASTER) == {"pointwise", "winograd", "depthwise", "pooling",
                                      "small_maps"}
  assert all(base.MEASURED_FASTER[name] for name in base.MEASURED_FASTER)


@pytest.mark.parametrize("faster", [True, False])
def test_conv2d_follows_the_measurement_for_the_installed_jaxlib(monkeypatch, faster):
  minor = ".".join(jaxlib.__version__.split(".")[:2])
  monkeypatch.setitem(base.MEASURED_FASTER, "pointwise", {minor: faster})
  calls = []
  real = pointwise.strided_pointwise_conv
  monkeypatch.setattr(pointwise, "strided_pointwise_conv",
                      lambda *a: calls.append(1) or real(*a))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 8)), jnp.float32)
  k = jnp.asarray(np.random.default_rng(1).normal(size=(1, 1, 8, 4)), jnp.float32)
  with settings.override(conv_impl="auto"):
    y = conv.conv2d(x, k)
  assert bool(calls) == faster
  np.testing.assert_allclose(y, conv.conv_reference(x, k), rtol=1e-5, atol=1e-5)
  calls.clear()
  with settings.override(conv_impl="fast"):  # forced: whatever was measured
    conv.conv2d(x, k)
  assert calls
