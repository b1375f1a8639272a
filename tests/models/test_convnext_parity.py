"""Numerical parity of jaxmed's ConvNeXt-Tiny with Keras Applications' `ConvNeXtTiny`.

The Keras model is built with `weights=None`, its kernels, LayerNorm gamma/beta, LayerScale
factors and biases randomised (fresh Keras ConvNeXt has identity LayerNorms, zero biases and
LayerScale 1e-6, which would make every residual branch invisible), written in the legacy HDF5
layout with `save_keras_h5(keras_reference.layer_weights(model))`, read back with `load_keras_h5`
and converted.
Inputs are 0..255 images: the model normalises them itself (preprocessing 'raw').
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxmed  # noqa: E402,F401  (XLA flags before jax initialises)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import drop_top, jit_unoptimised  # noqa: E402
from jaxmed.models import convnext  # noqa: E402
from jaxmed.models.registry import get_architecture  # noqa: E402
from jaxmed.ops import conv  # noqa: E402
from jaxmed.runtime import settings  # noqa: E402
from jaxmed.weights import keras_reference  # noqa: E402
from jaxmed.weights.keras_h5 import load_keras_h5, save_keras_h5  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on the JAX backend", allow_module_level=True)

ATOL = 1e-4
NON_SQUARE = (161, 190)  # not multiples of 32: Keras' 'valid' stem/downsampling convs floor
MAX_DIFFS = {}


def _randomise(model, seed):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    for w in layer.weights:
      if len(w.shape) != 1:
        continue
      n = w.shape[0]
      if layer.name.endswith("_layer_scale"):
        value = rng.uniform(0.1, 0.5, n)
      elif w.name == "gamma":
        value = rng.uniform(0.5, 1.5, n)
      else:  # LayerNorm beta, conv and Dense biases
        value = rng.normal(0, 0.1, n)
      w.assign(value.astype(np.float32))
  if "convnext_tiny_head_dense" in [layer.name for layer in model.layers]:
    dense = model.get_layer("convnext_tiny_head_dense")  # logits of a few units: softmax that moves
    dense.kernel.assign(np.asarray(dense.kernel) * 2)


def _keras(include_top, size, seed, tmp_path):
  # Zero kernels, then drawn: Keras' random initializers cost seconds of compiles a build.
  model = keras_reference.build("convnext_tiny", include_top=include_top, size=size, classes=10)
  keras_reference.randomize(model, seed)
  _randomise(model, seed)
  path = tmp_path / "weights.h5"
  save_keras_h5(path, keras_reference.layer_weights(model))
  return model, convnext.convert_keras(load_keras_h5(path))


def _images(h, w, seed=0):
  return np.random.default_rng(seed).uniform(0, 255, (2, h, w, 3)).astype(np.float32)


def _record(name, diff):
  MAX_DIFFS[name] = max(MAX_DIFFS.get(name, 0.0), diff)
  assert diff <= ATOL, f"{name}: max |diff| {diff:.3g} > {ATOL}"


@pytest.fixture(scope="module")
def top(tmp_path_factory):
  return _keras(True, (224, 224), 0, tmp_path_factory.mktemp("top"))


def test_parity_224_with_top(top):
  model, variables = top
  x = _images(224, 224)
  last_map = model.get_layer("convnext_tiny_head_gap").input
  both = keras.Model(model.inputs, [last_map, model.output])
  last, probs = (np.asarray(t) for t in both.predict(x, verbose=0))
  # include_top=False's output: the head LayerNorm's weights applied per position, by Keras.
  features = np.asarray(model.get_layer(convnext.HEAD_NORM)(last))
  with_top = convnext.ConvNeXtTiny(include_top=True, num_classes=10)
  without = convnext.ConvNeXtTiny()
  both_ours = jax.jit(lambda v, x: (with_top.apply(v, x), without.apply(drop_top(v), x)))
  logits, ours = (np.asarray(t) for t in both_ours(variables, x))  # one compile, shared trunk
  assert 0.3 < probs.max() < 0.99  # neither flat nor saturated, so a wrong logit shows
  _record("224 softmax", float(np.abs(np.asarray(jax.nn.softmax(logits)) - probs).max()))
  assert ours.shape == features.shape == (2, 7, 7, 768)
  _record("224 features", float(np.abs(ours - features).max()))


def test_parity_non_square_without_top(tmp_path):
  model, variables = _keras(False, NON_SQUARE, 1, tmp_path)
  assert "predictions" not in variables["params"]
  assert convnext.HEAD_NORM in variables["params"]  # Keras' auto-named final LayerNorm
  x = _images(*NON_SQUARE, seed=1)
  # The 224 check runs jaxmed compiled as training does; this one is about the mapping at another
  # shape, which an unoptimised compile (half the time) computes to the same values.
  ours = np.asarray(jit_unoptimised(convnext.ConvNeXtTiny().apply, variables, x)(variables, x))
  theirs = np.asarray(model.predict(x, verbose=0))
  assert ours.shape == theirs.shape == (2, 5, 5, 768)
  _record(f"{NON_SQUARE[0]}x{NON_SQUARE[1]} features", float(np.abs(ours - theirs).max()))
  stages = {convnext.stage_of(layer) for layer in variables["params"]}
  assert stages == set(range(convnext.NUM_STAGES))  # every stage has weights, none is the top's
  assert convnext.stage_of("predictions") == convnext.NUM_STAGES


def test_stage_boundaries():
  arch = get_architecture("convnext_tiny")
  assert arch.preprocessing == "raw" and arch.num_stages == 19
  s = arch.stage_of
  assert s("convnext_tiny_stem_conv") == s("convnext_tiny_stem_layernorm") == 0
  assert s("convnext_tiny_stage_0_block_0_depthwise_conv") == 1
  assert s("convnext_tiny_downsampling_layernorm_0") == s("convnext_tiny_downsampling_conv_0") == 4
  assert s("convnext_tiny_stage_1_block_0_layer_scale") == 4
  assert (s("convnext_tiny_downsampling_conv_2") == s("convnext_tiny_stage_3_block_0_layernorm")
          == 16)
  assert s("convnext_tiny_stage_3_block_2_pointwise_conv_2") == s(convnext.HEAD_NORM) == 18
  with pytest.raises(ValueError):
    s("conv1")


def test_freezing_stops_gradients_below_the_stage(top):
  net = convnext.ConvNeXtTiny()
  x = _images(32, 32)
  params = drop_top(top[1])["params"]  # the converted weights: no init to compile
  grad = jax.grad(lambda p: net.apply({"params": p}, x, train=True, trainable_from=16).sum())
  # Unoptimised XLA: the check is about which values flow, and compiling is most of its time.
  grads = jit_unoptimised(grad, params)(params)
  # On the host: jnp's abs/sum/array_equal compile an XLA program per leaf shape (seconds here).
  for layer, tree in grads.items():
    norm = sum(float(np.abs(np.asarray(g)).sum()) for g in jax.tree_util.tree_leaves(tree))
    assert (norm > 0) == (convnext.stage_of(layer) >= 16), layer


@pytest.mark.parametrize("hw", [(7, 7), (6, 9)], ids=str)
def test_depthwise_7x7_fast_path_matches_lax(hw):
  """The block's conv, routed through conv2d (CPU: the shifted multiply-add path), against lax."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, *hw, 8)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(7, 7, 8, 1)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, *hw, 8)), jnp.float32)

  def value_and_grads(fn):
    y, vjp = jax.vjp(jax.jit(fn), x, kernel)
    return (y, *vjp(g))

  with settings.override(conv_impl="fast"):
    fast = value_and_grads(lambda a, k: conv.conv2d(a, k, (1, 1), "SAME", 8))
    hlo = jax.jit(lambda a, k: conv.conv2d(a, k, (1, 1), "SAME", 8)).lower(x, kernel).as_text()
  assert "convolution" not in hlo  # the fast path, not lax's grouped conv
  ref = value_and_grads(lambda a, k: conv.conv_reference(a, k, (1, 1), "SAME", 8))
  for ours, theirs in zip(fast, ref):
    scale = float(jnp.abs(theirs).max())
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5 * scale, rtol=0)


def test_converter_errors_name_the_layer(top):
  model, _ = top
  layers = keras_reference.layer_weights(model)
  with pytest.raises(ValueError, match="unexpected layer 'bogus'"):
    convnext.convert_keras({**layers, "bogus": {"kernel": np.ones(1)}})
  del layers["convnext_tiny_stage_2_block_4_pointwise_conv_1"]
  with pytest.raises(ValueError, match="missing"):
    convnext.convert_keras(layers)


def test_report_max_diffs():
  print("\nmax |diff| vs Keras:", *(f"  {k}: {v:.2e}" for k, v in MAX_DIFFS.items()), sep="\n")
