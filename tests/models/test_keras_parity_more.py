"""Numerical parity with Keras Applications for MobileNet v1, VGG16 and Xception, and LeNet basics.

Each Keras model is built with `weights=None`, its kernels, BatchNorm statistics and biases
randomised (fresh Keras layers have identity BatchNorms and zero biases, which would hide mapping
mistakes), written in the legacy HDF5 layout with `save_keras_h5`, read back with `load_keras_h5`
and converted.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxmed  # noqa: E402,F401  (XLA flags before jax initialises)
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from conftest import drop_top, jit_unoptimised  # noqa: E402
from jaxmed.models import lenet, mobilenet_v1, vgg, xception  # noqa: E402
from jaxmed.weights import keras_reference  # noqa: E402
from jaxmed.weights.keras_h5 import load_keras_h5, save_keras_h5  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on the JAX backend", allow_module_level=True)

ATOL = 1e-4
REAL_MOBILENET = (Path(__file__).resolve().parents[2].parent / "shared" / "weights"
                  / "mobilenet_2_5_224_tf_no_top.h5")
MAX_DIFFS = {}  # name -> max |diff|, printed by the last test (pytest -s) for the record

# name -> (Keras constructor, kwargs, jaxmed module, last Keras feature layer, non-square size)
MODELS = {
    "mobilenet_025": (lambda **kw: keras.applications.MobileNet(alpha=0.25, **kw),
                      mobilenet_v1, dict(alpha=0.25), "conv_pw_13_relu", (161, 190)),
    "mobilenet_100": (lambda **kw: keras.applications.MobileNet(alpha=1.0, **kw),
                      mobilenet_v1, dict(alpha=1.0), "conv_pw_13_relu", (160, 192)),
    "vgg16": (keras.applications.VGG16, vgg, {}, "block5_pool", (160, 192)),
    "xception": (keras.applications.Xception, xception, {}, "block14_sepconv2_act", (107, 150)),
}


def _keras(name, **kwargs):
  """MODELS[name]'s Keras application with zero kernels: Keras' random initializers compile one
  XLA program per kernel shape (VGG16's build: ~15 s), for weights `_randomise` draws anyway."""
  with keras_reference.zero_random_initializers():
    return MODELS[name][0](weights=None, **kwargs)


def _randomise(model, seed):
  """Random kernels, BatchNorm gamma/beta/mean/variance (variance > 0) and biases."""
  keras_reference.randomize(model, seed)
  rng = np.random.default_rng(seed)
  draw = {"gamma": lambda n: rng.uniform(0.5, 1.5, n), "beta": lambda n: rng.normal(0, 0.1, n),
          "moving_mean": lambda n: rng.normal(0, 0.1, n),
          "moving_variance": lambda n: rng.uniform(0.5, 2.0, n),
          "bias": lambda n: rng.normal(0, 0.05, n)}
  for layer in model.layers:
    for w in layer.weights:
      if w.name in draw:
        w.assign(draw[w.name](w.shape[0]).astype(np.float32))


def _to_h5(model, path):
  save_keras_h5(path, {layer.name: {w.name: np.asarray(w.numpy()) for w in layer.weights}
                       for layer in model.layers})
  return load_keras_h5(path)


def _inputs(h, w, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (2, h, w, 3)).astype(np.float32)


def _record(name, diff):
  MAX_DIFFS[name] = max(MAX_DIFFS.get(name, 0.0), diff)
  assert diff <= ATOL, f"{name}: max |diff| {diff:.3g} > {ATOL}"


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request, tmp_path_factory):
  """(name, Keras model with top at 224, its converted variables, jaxmed module spec)."""
  name = request.param
  _, module, kwargs, feature_layer, _ = MODELS[name]
  model = _keras(name, include_top=True, classes=10, input_shape=(224, 224, 3))
  _randomise(model, seed=len(name))
  layers = _to_h5(model, tmp_path_factory.mktemp(name) / "top.h5")
  both = keras.Model(model.inputs, [model.get_layer(feature_layer).output, model.output])
  return name, both, module.convert_keras(layers), module, kwargs


def _net(module, kwargs, include_top):
  arch = next(iter(module.ARCHITECTURES.values()))
  return arch.build(dtype=jnp.float32, include_top=include_top, num_classes=10,
                    **{"alpha": 1.0, **kwargs})


def _without_top(variables):
  """The same weights without the classifier layers."""
  return drop_top(variables, top=("conv_preds", "fc1", "fc2", "predictions"))


def _jaxmed(module, kwargs, variables, x):
  """Features of `variables` without their top at the non-square size. Unoptimised XLA (half the
  compile time, the same values): the 224 checks run jaxmed compiled as training does, this one
  is about the mapping."""
  net, variables = _net(module, kwargs, include_top=False), _without_top(variables)
  return np.asarray(jit_unoptimised(net.apply, variables, x)(variables, x))


def _jaxmed_with_top(module, kwargs, variables, x):
  """(logits, features) in one jit: the shared trunk is compiled once (XLA's CSE)."""
  top, bare = _net(module, kwargs, include_top=True), _net(module, kwargs, include_top=False)
  both = jax.jit(lambda v, x: (top.apply(v, x), bare.apply(_without_top(v), x)))
  return tuple(np.asarray(t) for t in both(variables, jnp.asarray(x)))


def test_parity_224_with_top(pair):
  name, both, variables, module, kwargs = pair
  x = _inputs(224, 224)
  features, probs = (np.asarray(t) for t in both.predict(x, verbose=0))
  logits, ours = _jaxmed_with_top(module, kwargs, variables, x)
  _record(f"{name} 224 softmax", float(np.abs(np.asarray(jax.nn.softmax(logits)) - probs).max()))
  assert ours.shape == features.shape
  _record(f"{name} 224 features", float(np.abs(ours - features).max()))


def test_parity_non_square_without_top(pair, tmp_path):
  name, _, _, module, kwargs = pair
  h, w = MODELS[name][-1]
  model = _keras(name, include_top=False, input_shape=(h, w, 3))
  _randomise(model, seed=len(name) + 1)
  layers = _to_h5(model, tmp_path / "no_top.h5")  # Xception: fresh auto-generated residual names
  variables = module.convert_keras(layers)
  assert "predictions" not in variables["params"] and "conv_preds" not in variables["params"]
  x = _inputs(h, w, seed=1)
  ours = _jaxmed(module, kwargs, variables, x)
  theirs = np.asarray(model.predict(x, verbose=0))
  assert ours.shape == theirs.shape
  _record(f"{name} {h}x{w} features", float(np.abs(ours - theirs).max()))
  for layer in variables["params"]:  # every converted layer has a freezing stage
    assert 0 <= module.stage_of(layer) < module.NUM_STAGES


@pytest.mark.skipif(not REAL_MOBILENET.exists(), reason=f"{REAL_MOBILENET} not present")
def test_real_mobilenet_025_weights_match_keras():
  model = _keras("mobilenet_025", include_top=False, input_shape=(224, 224, 3))
  model.load_weights(REAL_MOBILENET)
  variables = mobilenet_v1.convert_keras(load_keras_h5(REAL_MOBILENET))
  x = _inputs(224, 224, seed=2)
  ours = np.asarray(jax.jit(mobilenet_v1.MobileNetV1(alpha=0.25).apply)(variables, jnp.asarray(x)))
  theirs = np.asarray(model.predict(x, verbose=0))
  assert ours.shape == theirs.shape == (2, 7, 7, 256)
  assert np.abs(theirs).max() > 0.1  # real weights give non-trivial features
  _record("mobilenet_025 real weights 224 features", float(np.abs(ours - theirs).max()))


def test_converter_errors_name_missing_and_unexpected_layers():
  rng = np.random.default_rng(0)
  layers = {"conv1": {"kernel": rng.normal(size=(3, 3, 3, 8))}, "bogus": {"kernel": np.ones(1)},
            "conv1_relu": {}}
  with pytest.raises(ValueError,
                     match=r"missing layers \['conv1_bn'.*unexpected layers \['bogus'\]"):
    mobilenet_v1.convert_keras(layers)
  with pytest.raises(ValueError, match="missing layers.*fc2"):  # a partial VGG top
    vgg.convert_keras({**{n: {"kernel": np.ones(1)} for n in vgg.REQUIRED},
                       "fc1": {"kernel": np.ones(1)}})


def test_lenet_shapes_freezing_and_training():
  arch = lenet.ARCHITECTURES["lenet"]
  assert arch.convert is None and arch.preprocessing == "unit"
  net = arch.build(alpha=1.0, dtype=jnp.float32, include_top=True, num_classes=2)
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 0.2, (8, 16, 24, 3)).astype(np.float32)
  y = np.arange(8) % 2
  x[y == 0, :, :12] += 0.8   # class 0: bright left half, class 1: bright right half
  x[y == 1, :, 12:] += 0.8
  variables = jax.jit(net.init)(jax.random.PRNGKey(0), x)
  assert jax.eval_shape(net.apply, variables, x).shape == (8, 2)
  features = jax.eval_shape(lenet.LeNet().apply, variables, x)
  assert features.shape == (8, 2, 3, 128)
  assert {arch.stage_of(name) for name in variables["params"]} == {0, 1, 2, 3}

  def loss_fn(params, batch_stats, trainable_from):
    logits, updates = net.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                trainable_from=trainable_from, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, batch_stats, state):  # stage 0 frozen: one compile checks freezing and learning
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, 1)
    delta, state = opt.update(grads, state)
    return optax.apply_updates(params, delta), updates["batch_stats"], state, loss

  params, batch_stats = variables["params"], variables["batch_stats"]
  state, losses = opt.init(params), []
  for _ in range(8):
    params, batch_stats, state, loss = step(params, batch_stats, state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses
  before, after = variables["params"], params
  np.testing.assert_array_equal(after["block1_conv"]["kernel"], before["block1_conv"]["kernel"])
  np.testing.assert_array_equal(batch_stats["block1_bn"]["mean"],  # frozen BN keeps moving stats
                                variables["batch_stats"]["block1_bn"]["mean"])
  assert np.any(np.asarray(after["block2_conv"]["kernel"] != before["block2_conv"]["kernel"]))
  assert np.any(np.asarray(batch_stats["block2_bn"]["mean"]
                           != variables["batch_stats"]["block2_bn"]["mean"]))


def test_report_max_diffs():
  print("\nmax |diff| vs Keras:", *(f"  {k}: {v:.2e}" for k, v in MAX_DIFFS.items()), sep="\n")
