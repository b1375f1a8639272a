"""Numerical parity with Keras Applications' InceptionV3, and its auto-named layers' mapping.

The Keras model is built with `weights=None`, its kernels, BatchNorm statistics and beta
randomised (fresh layers are identities, which would hide mapping mistakes), written in the legacy
HDF5 layout with `save_keras_h5`, read back with `load_keras_h5` and converted. Keras names
InceptionV3's convs and BatchNorms by a session-wide counter, so the second model built here starts
at `conv2d_94`, and a renumbered copy (`conv2d_1`.., as the official ImageNet file) must convert
identically.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxmed  # noqa: E402,F401  (XLA flags before jax initialises)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import jit_unoptimised  # noqa: E402
from jaxmed.models import inception_v3  # noqa: E402
from jaxmed.weights import keras_reference  # noqa: E402
from jaxmed.weights.keras_h5 import load_keras_h5, save_keras_h5  # noqa: E402
from jaxmed.weights.keras_reference import layer_weights  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on the JAX backend", allow_module_level=True)

ATOL = 1e-4
NON_SQUARE = (150, 190)
MAX_DIFFS = {}  # name -> max |diff|, printed by the last test (pytest -s) for the record


def _randomise(model, seed):
  """Random kernels (the model is built with zeros: Keras' random initializers cost seconds of
  compiles a build), BatchNorm beta/mean/variance (variance > 0) and Dense biases."""
  keras_reference.randomize(model, seed)
  rng = np.random.default_rng(seed)
  draw = {"beta": lambda n: rng.normal(0, 0.1, n), "moving_mean": lambda n: rng.normal(0, 0.1, n),
          "moving_variance": lambda n: rng.uniform(0.5, 2.0, n),
          "bias": lambda n: rng.normal(0, 0.05, n)}
  for layer in model.layers:
    for w in layer.weights:
      if w.name in draw:
        w.assign(draw[w.name](w.shape[0]).astype(np.float32))


def _inputs(h, w, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (2, h, w, 3)).astype(np.float32)


def _record(name, diff):
  MAX_DIFFS[name] = max(MAX_DIFFS.get(name, 0.0), diff)
  assert diff <= ATOL, f"{name}: max |diff| {diff:.3g} > {ATOL}"


def _jaxmed(variables, x):
  """(logits, mixed10 features) in one jit: the shared trunk is compiled once (XLA's CSE)."""
  top = inception_v3.InceptionV3(include_top=True, num_classes=10)

  def both(variables, x):
    no_top = {kind: {n: v for n, v in tree.items() if n != "predictions"}
              for kind, tree in variables.items()}
    logits = top.apply(variables, x) if "predictions" in variables["params"] else None
    return logits, inception_v3.InceptionV3().apply(no_top, x)
  return jax.tree_util.tree_map(np.asarray, jax.jit(both)(variables, jnp.asarray(x)))


@pytest.fixture(scope="module")
def with_top(tmp_path_factory):
  """(Keras model with top at 224 giving (mixed10, softmax), its file's layers, converted)."""
  model = keras_reference.build("inception_v3", include_top=True, classes=10)
  _randomise(model, seed=1)
  path = tmp_path_factory.mktemp("inception_v3") / "top.h5"
  save_keras_h5(path, layer_weights(model))
  layers = load_keras_h5(path)
  both = keras.Model(model.inputs, [model.get_layer("mixed10").output, model.output])
  return both, layers, inception_v3.convert_keras(layers)


def test_parity_224_with_top(with_top):
  both, _, variables = with_top
  x = _inputs(224, 224)
  features, probs = (np.asarray(t) for t in both.predict(x, verbose=0))
  logits, ours = _jaxmed(variables, x)
  _record("224 softmax", float(np.abs(np.asarray(jax.nn.softmax(logits)) - probs).max()))
  assert ours.shape == features.shape == (2, 5, 5, 2048)
  assert np.abs(features).max() > 0.1  # a mapping mistake could not hide in near-zero features
  _record("224 features", float(np.abs(ours - features).max()))


def test_parity_non_square_without_top(with_top, tmp_path):
  model = keras_reference.build("inception_v3", include_top=False, size=NON_SQUARE)
  _randomise(model, seed=2)
  layers = layer_weights(model)
  # Built second in this session, its auto-names continue the counter: not from 'conv2d'.
  assert "conv2d" not in layers and "batch_normalization" not in layers
  save_keras_h5(tmp_path / "no_top.h5", layers)
  variables = inception_v3.convert_keras(load_keras_h5(tmp_path / "no_top.h5"))
  assert "predictions" not in variables["params"]
  x = _inputs(*NON_SQUARE, seed=1)
  # The 224 check runs jaxmed compiled as training does; this one is about the mapping at another
  # shape, which an unoptimised compile (half the time) computes to the same values.
  net = inception_v3.InceptionV3()
  ours = np.asarray(jit_unoptimised(net.apply, variables, x)(variables, x))
  theirs = np.asarray(model.predict(x, verbose=0))
  assert ours.shape == theirs.shape
  _record(f"{NON_SQUARE[0]}x{NON_SQUARE[1]} features", float(np.abs(ours - theirs).max()))


def _renumbered(layers):
  """The same weights with the auto-names renumbered from 1 in creation order (the suffix; this
  session's may start anywhere), as in the official ImageNet file: conv2d_1..conv2d_94."""
  convs, norms = inception_v3._creation_order(layers)
  renames = {**{n: f"conv2d_{i}" for i, n in enumerate(convs, 1)},
             **{n: f"batch_normalization_{i}" for i, n in enumerate(norms, 1)}}
  return {renames.get(n, n): w for n, w in layers.items()}


def test_renumbered_file_converts_identically(with_top, tmp_path):
  _, layers, variables = with_top
  shifted = _renumbered(layers)
  assert "conv2d_94" in shifted and "batch_normalization_94" in shifted
  order = list(shifted)[::-1]  # and listed in another order: the converter must not care
  save_keras_h5(tmp_path / "renumbered.h5", shifted, order=order)
  again = inception_v3.convert_keras(load_keras_h5(tmp_path / "renumbered.h5"))
  flat, flat_again = (jax.tree_util.tree_flatten_with_path(v)[0] for v in (variables, again))
  assert [p for p, _ in flat] == [p for p, _ in flat_again]
  for (path, a), (_, b) in zip(flat, flat_again):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_variables_match_module_and_stages(with_top):
  _, _, variables = with_top
  net = inception_v3.InceptionV3(include_top=True, num_classes=10)
  expected = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))
  shapes = lambda tree: jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)
  assert shapes(variables) == shapes(dict(expected))
  assert "scale" not in variables["params"]["stem_conv1_bn"]  # Keras' scale=False: no gamma
  stages = {inception_v3.stage_of(name) for name in variables["params"]}
  assert stages == set(range(inception_v3.NUM_STAGES + 1))
  assert inception_v3.stage_of("mixed10_branch_pool_bn") == inception_v3.NUM_STAGES - 1
  assert inception_v3.stage_of("predictions") == inception_v3.NUM_STAGES


def test_converter_errors(with_top):
  _, layers, _ = with_top
  layers = _renumbered(layers)
  swapped = dict(layers)  # mixed0's 1x1 (the 6th conv) and 5x5 (the 8th) convs exchanged
  swapped["conv2d_6"], swapped["conv2d_8"] = layers["conv2d_8"], layers["conv2d_6"]
  with pytest.raises(ValueError, match=r"conv2d_6 has shape \(5, 5, 48, 64\), expected "
                                       r"\(1, 1, 192, 64\) for mixed0_branch1x1"):
    inception_v3.convert_keras(swapped)
  with pytest.raises(ValueError, match="93 convs and 94 BatchNorms"):
    inception_v3.convert_keras({n: w for n, w in layers.items() if n != "conv2d_40"})
  with pytest.raises(ValueError, match="unexpected layer 'bogus'"):
    inception_v3.convert_keras({**layers, "bogus": {"kernel": np.ones(1)}})
  with pytest.raises(ValueError, match="at least 75x75"):
    jax.eval_shape(inception_v3.InceptionV3().init, jax.random.PRNGKey(0),
                   jnp.zeros((1, 74, 80, 3)))


def test_report_max_diffs():
  print("\nmax |diff| vs Keras:", *(f"  {k}: {v:.2e}" for k, v in MAX_DIFFS.items()), sep="\n")
