"""Numerical parity of jaxmed's EfficientNetV2 B0 and S with Keras Applications, and their extras.

Each Keras app is built once, with `weights=None` and `input_shape=(None, None, 3)`, and given
Keras' own top (global average pool, Dense 'predictions' with softmax; its Dropout is an inference
no-op) on top of `top_activation`, so one model serves the 224x224 check with top and the
non-square check without it. It is built with zero kernels (`keras_reference.build`): Keras'
random initializers compile one XLA program per kernel shape, 20-70 s a build here, for weights
`_randomise` replaces anyway. Its weights are written in the legacy HDF5 layout, read back and
converted. Inputs are 0..255, as the Keras models normalise inside.

Weights are randomised: BatchNorm statistics, gamma/beta and biases as the other parity tests do,
and kernels too, drawn with variance 1 / fan_in. With Keras' fresh kernels (variance 2 / fan_out)
or He's (2 / fan_in) and BatchNorms that do not normalise, activations grow block after block
(~1e7 at the end of S, ~1e3 of B0) and the squeeze-excite gates become so sensitive that float32
rounding differences grow to order 1 at the output (Keras against itself moves by as much on a
1e-6 relative change of the input): a chaotic network, not a mapping error. With 1 / fan_in the
features stay O(1) and such a change moves them by ~1e-6.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxmed  # noqa: E402,F401  (XLA flags before jax initialises)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import jit_unoptimised  # noqa: E402
from jaxmed.models import efficientnet_v2  # noqa: E402
from jaxmed.models.registry import ARCHITECTURES  # noqa: E402
from jaxmed.weights import keras_reference  # noqa: E402
from jaxmed.weights.convert import check_complete  # noqa: E402
from jaxmed.weights.keras_h5 import load_keras_h5, save_keras_h5  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on the JAX backend", allow_module_level=True)

ATOL = 1e-4
NUM_CLASSES = 10
APPS = {"efficientnet_v2_b0": "EfficientNetV2B0", "efficientnet_v2_s": "EfficientNetV2S"}
NON_SQUARE = (161, 190)  # odd and even: TF SAME pads asymmetrically on one axis only
MAX_DIFFS = {}


def _randomise(model, seed):
  """Random BatchNorm gamma/beta/mean/variance, biases, and fan_in-scaled kernels."""
  rng = np.random.default_rng(seed)
  draw = {"gamma": lambda s: rng.uniform(0.5, 1.5, s), "beta": lambda s: rng.normal(0, 0.1, s),
          "moving_mean": lambda s: rng.normal(0, 0.1, s),
          "moving_variance": lambda s: rng.uniform(0.5, 2.0, s),
          "bias": lambda s: rng.normal(0, 0.05, s)}
  for layer in model.layers:
    depthwise = type(layer).__name__ == "DepthwiseConv2D"
    for w in layer.weights:
      shape = tuple(w.shape)
      if w.name == "kernel":
        fan_in = np.prod(shape[:-2]) if depthwise else np.prod(shape[:-1])
        w.assign(rng.normal(0, np.sqrt(1 / fan_in), shape).astype(np.float32))
      elif w.name in draw:
        w.assign(draw[w.name](shape).astype(np.float32))


def _inputs(h, w, seed=0):
  return np.random.default_rng(seed).uniform(0, 255, (2, h, w, 3)).astype(np.float32)


def _record(name, diff):
  MAX_DIFFS[name] = max(MAX_DIFFS.get(name, 0.0), diff)
  assert diff <= ATOL, f"{name}: max |diff| {diff:.3g} > {ATOL}"


@pytest.fixture(scope="module", params=list(APPS))
def pair(request, tmp_path_factory):
  """(name, Keras model -> [top_activation, softmax], the file's layers as read back)."""
  name = request.param
  base = keras_reference.build(name, include_top=False, size=(None, None))
  with keras_reference.zero_random_initializers():
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    probs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(pooled)
  model = keras.Model(base.inputs, [base.output, probs])
  _randomise(model, seed=len(name))
  path = tmp_path_factory.mktemp(name) / "top.h5"
  save_keras_h5(path, keras_reference.layer_weights(model))
  return name, model, load_keras_h5(path)


def _build(name, include_top):
  return ARCHITECTURES[name].build(alpha=1.0, dtype=jnp.float32, include_top=include_top,
                                   num_classes=NUM_CLASSES)


def test_parity_224_with_top(pair):
  name, model, layers = pair
  variables = ARCHITECTURES[name].convert(layers)
  x = _inputs(224, 224)
  features, probs = (np.asarray(t) for t in model.predict(x, verbose=0))
  top, no_top = _build(name, True), _build(name, False)
  # One compile for both modules: same arguments, so XLA shares the backbone they have in common.
  both = jax.jit(lambda v, x: (jax.nn.softmax(top.apply(v, x)), no_top.apply(v, x)))
  ours_probs, ours = (np.asarray(t) for t in both(variables, jnp.asarray(x)))
  _record(f"{name} 224 softmax", float(np.abs(ours_probs - probs).max()))
  assert ours.shape == features.shape == (2, 7, 7, 1280)
  _record(f"{name} 224 features", float(np.abs(ours - features).max()))


def test_parity_non_square_without_top(pair):
  name, model, layers = pair
  arch = ARCHITECTURES[name]
  no_top = {n: w for n, w in layers.items() if n != "predictions"}
  variables = arch.convert(no_top)
  h, w = NON_SQUARE
  x = _inputs(h, w, seed=1)
  theirs = np.asarray(model.predict(x, verbose=0)[0])
  net = arch.build(alpha=1.0, dtype=jnp.float32, include_top=False, num_classes=NUM_CLASSES)
  check_complete(variables, jax.eval_shape(net.init, jax.random.PRNGKey(0), x), name)
  # The 224 check runs jaxmed compiled as training does; this one is about the mapping at another
  # shape, which an unoptimised compile (half the time) computes to the same values.
  ours = np.asarray(jit_unoptimised(net.apply, variables, x)(variables, x))
  assert ours.shape == theirs.shape == (2, 6, 6, 1280)
  _record(f"{name} {h}x{w} features", float(np.abs(ours - theirs).max()))
  # Every converted layer has a stage; each stage below the top has weights.
  stages = {arch.stage_of(layer) for layer in variables["params"]}
  assert stages == set(range(arch.num_stages))
  assert arch.stage_of("predictions") == arch.num_stages


def test_block_tables_match_keras():
  """Stage counts: stem + Keras' block count + top; S has 40 blocks ending in 'block6o_'."""
  assert ARCHITECTURES["efficientnet_v2_b0"].num_stages == 1 + 21 + 1
  assert ARCHITECTURES["efficientnet_v2_s"].num_stages == 1 + 40 + 1
  assert efficientnet_v2.blocks_of("s")[-1].name == "block6o_"
  rates = [b.drop_rate for b in efficientnet_v2.blocks_of("b0")]
  assert rates[0] == 0 and rates[2] == pytest.approx(0.2 * 2 / 21)  # Keras' block2b_drop rate
  for name in APPS:
    assert ARCHITECTURES[name].preprocessing == "raw"


def test_converter_errors_name_missing_and_unexpected_layers(pair):
  name, _, layers = pair
  convert = ARCHITECTURES[name].convert
  broken = {n: w for n, w in layers.items() if n != "block1a_project_bn"}
  broken["bogus"] = {"kernel": np.ones(1)}
  with pytest.raises(ValueError, match=r"missing layers \['block1a_project_bn'\].*'bogus'"):
    convert(broken)


# Unoptimised XLA: these checks are about which values flow, and compiling is most of their time.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _random_variables(net, x):
  """Random variables from shapes only (no Keras): fan_in-scaled kernels, random BatchNorms."""
  rng = np.random.default_rng(5)

  def fill(path, s):
    leaf = path[-1].key
    if leaf in ("kernel", "depthwise_kernel"):
      fan_in = np.prod(s.shape[:-2] if leaf == "depthwise_kernel" else s.shape[:-1])
      value = rng.normal(0, np.sqrt(1 / fan_in), s.shape)
    elif leaf in ("scale", "var"):
      value = rng.uniform(0.5, 1.5, s.shape)
    else:  # biases, BatchNorm offsets and means
      value = rng.normal(0, 0.1, s.shape)
    return jax.device_put(value.astype(s.dtype))  # jnp.asarray: a compile per shape

  return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(net.init, jax.random.PRNGKey(0), x))


def test_training_freezing_and_stochastic_depth():
  """One vmapped backward pass over two 'dropout' keys, stages below 9 (block5a) frozen:
  frozen layers get no gradient and keep their statistics, trainable ones get both; the output
  depends on the key (trainable residual blocks drop whole samples), the frozen blocks' does not."""
  arch, trainable_from = ARCHITECTURES["efficientnet_v2_b0"], 9
  first_trainable = "block5a_expand_conv"  # its output is a function of frozen blocks only
  assert arch.stage_of(first_trainable) == trainable_from
  net = _build("efficientnet_v2_b0", False)
  x = jnp.asarray(_inputs(32, 32, seed=3))
  variables = _random_variables(net, x)
  params, stats = variables["params"], variables["batch_stats"]

  def loss(p, key):
    y, updates = net.apply({"params": p, "batch_stats": stats}, x, train=True,
                           trainable_from=trainable_from, rngs={"dropout": key},
                           mutable=["batch_stats", "intermediates"],
                           capture_intermediates=lambda m, _: m.name == first_trainable)
    frozen_out = updates["intermediates"][first_trainable]["__call__"][0]
    return jnp.sum(y ** 2), (y, frozen_out, updates["batch_stats"])

  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  step = jax.vmap(jax.grad(loss, has_aux=True), in_axes=(None, 0))
  # Unoptimised XLA: the check is about which values flow, and compiling is most of its time.
  grads, (y, frozen_out, new_stats) = jax.jit(step).lower(params, keys).compile(compiler_options={
      "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})(params, keys)
  assert float(jnp.abs(y[0] - y[1]).max()) > 1e-3
  np.testing.assert_array_equal(np.asarray(frozen_out[0]), np.asarray(frozen_out[1]))
  # On the host: jnp's abs/sum/array_equal compile an XLA program per leaf shape (seconds here).
  for layer, leaves in grads.items():
    norm = sum(float(np.abs(np.asarray(g)).sum()) for g in jax.tree.leaves(leaves))
    assert (norm == 0) == (arch.stage_of(layer) < trainable_from), (layer, norm)
  for layer in stats:
    same = all(np.array_equal(a, np.asarray(b)[0])
               for a, b in zip(jax.tree.leaves(stats[layer]), jax.tree.leaves(new_stats[layer])))
    assert same == (arch.stage_of(layer) < trainable_from), layer


def test_report_max_diffs():
  print("\nmax |diff| vs Keras:", *(f"  {k}: {v:.2e}" for k, v in MAX_DIFFS.items()), sep="\n")
