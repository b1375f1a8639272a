"""Numerical parity of jaxmed's EfficientNets with Keras 3 Applications and torchvision.

Keras B0..B3: built with `weights=None`, BatchNorm statistics, biases and the Normalization
layer's mean/variance randomised, written with `save_keras_h5`, read back with `load_keras_h5`,
converted. torchvision B0: re-declared below in plain torch (torchvision is not installed),
written with `torch.save`, read by `load_torch_state_dict`. Keras inputs are raw 0..255 pixels
(the model normalises inside); torch inputs are already preprocessed.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxmed  # noqa: E402,F401  (XLA flags before jax initialises)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import drop_top, jit_unoptimised, same_tree  # noqa: E402
from jaxmed.models import efficientnet  # noqa: E402
from jaxmed.weights.keras_h5 import load_keras_h5, save_keras_h5  # noqa: E402
from jaxmed.weights.torch_pickle import load_torch_state_dict  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on the JAX backend", allow_module_level=True)

from jaxmed.weights import keras_reference  # noqa: E402

ATOL = 1e-4
KERAS_APPS = {"efficientnet_b0": "EfficientNetB0", "efficientnet_b1": "EfficientNetB1",
              "efficientnet_b2": "EfficientNetB2", "efficientnet_b3": "EfficientNetB3"}
NON_SQUARE = (160, 192)
SMALL = (32, 45, 3)  # Keras' minimum (include_top=False), odd width
MAX_DIFFS = {}  # name -> max |diff|, printed by the last test (pytest -s) for the record


def _record(name, diff):
  MAX_DIFFS[name] = max(MAX_DIFFS.get(name, 0.0), diff)
  assert diff <= ATOL, f"{name}: max |diff| {diff:.3g} > {ATOL}"


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _pixels(h, w, seed=0):
  return np.random.default_rng(seed).uniform(0, 255, (2, h, w, 3)).astype(np.float32)


def _randomise(model, seed):
  """Random kernels, BatchNorm gamma/beta/mean/variance, biases, and Normalization mean/variance
  (not the ImageNet values, which the converter would fold). Kernels are LeCun-normal: He's gain
  with moving statistics that do not track it grows B3's features to ~400, where float32 rounding
  alone exceeds 1e-4; this way they stay O(1), like a trained net's."""
  rng = np.random.default_rng(seed)
  draw = {"gamma": lambda n: rng.uniform(0.5, 1.5, n), "beta": lambda n: rng.normal(0, 0.1, n),
          "moving_mean": lambda n: rng.normal(0, 0.1, n),
          "moving_variance": lambda n: rng.uniform(0.5, 2.0, n),
          "bias": lambda n: rng.normal(0, 0.05, n),
          "mean": lambda n: rng.uniform(0.3, 0.6, n),
          "variance": lambda n: rng.uniform(0.03, 0.1, n)}
  for layer in model.layers:
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    for w in layer.weights:
      shape = tuple(w.shape)
      if w.name == "kernel":
        fan_in = np.prod(shape[:2] if depthwise else shape[:-1])
        w.assign((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))
      elif w.name in draw:
        w.assign(draw[w.name](shape[0]).astype(np.float32))
    if isinstance(layer, keras.layers.Normalization):
      layer.finalize_state()  # Keras caches mean/variance as constants


def _via_h5(model, path):
  save_keras_h5(path, keras_reference.layer_weights(model))
  return load_keras_h5(path)


def _net(arch, include_top, num_classes=10):
  return efficientnet.ARCHITECTURES[arch].build(alpha=1.0, dtype=jnp.float32,
                                                include_top=include_top, num_classes=num_classes)


@pytest.fixture(scope="module", params=list(KERAS_APPS))
def keras_pair(request, tmp_path_factory):
  """(arch, Keras model with top at 224 returning (features, softmax), file layers)."""
  arch = request.param
  model = keras_reference.build(arch, include_top=True, classes=10)
  _randomise(model, seed=len(arch))
  layers = _via_h5(model, tmp_path_factory.mktemp(arch) / "top.h5")
  both = keras.Model(model.inputs, [model.get_layer("top_activation").output, model.output])
  return arch, both, layers


def test_keras_parity_224_with_top(keras_pair):
  arch, both, layers = keras_pair
  x = _pixels(224, 224)
  features, probs = (np.asarray(t) for t in both.predict(x, verbose=0))
  convert = efficientnet.ARCHITECTURES[arch].convert
  with_top, without_top = convert(layers), convert({n: w for n, w in layers.items()
                                                     if n != "predictions"})
  assert "predictions" not in without_top["params"]
  # The no-top file converts to the with-top variables less the top: so both modules can run on
  # one set of arguments, and XLA compiles their common trunk once (two sets: the trunk twice).
  assert same_tree(without_top, drop_top(with_top))
  top, bare = _net(arch, True), _net(arch, False)
  logits, ours = jax.jit(lambda v, x: (top.apply(v, x), bare.apply(drop_top(v), x)))(
      with_top, x)
  _record(f"{arch} 224 softmax", _max_diff(jax.nn.softmax(logits), probs))
  assert ours.shape == features.shape
  _record(f"{arch} 224 features", _max_diff(ours, features))


def test_keras_parity_non_square_without_top(keras_pair, tmp_path):
  arch, _, top_layers = keras_pair
  model = keras_reference.build(arch, include_top=False, size=NON_SQUARE)
  _randomise(model, seed=len(arch) + 1)
  layers = _via_h5(model, tmp_path / "no_top.h5")
  variables = efficientnet.ARCHITECTURES[arch].convert(layers)
  x = _pixels(*NON_SQUARE, seed=1)
  # The 224 check runs jaxmed compiled as training does; this one is about the mapping at another
  # shape, which an unoptimised compile (half the time) computes to the same values.
  ours = jit_unoptimised(_net(arch, False).apply, variables, x)(variables, x)
  theirs = np.asarray(model.predict(x, verbose=0))
  assert ours.shape == theirs.shape
  _record(f"{arch} {NON_SQUARE[0]}x{NON_SQUARE[1]} features", _max_diff(ours, theirs))
  spec = efficientnet.ARCHITECTURES[arch]
  converted = spec.convert(top_layers)
  for collection in ("params", "batch_stats"):  # every converted layer has a freezing stage
    for layer in converted[collection]:
      limit = spec.num_stages + 1 if layer == "predictions" else spec.num_stages
      assert 0 <= spec.stage_of(layer) < limit, layer
  assert spec.stage_of("predictions") == spec.num_stages


def test_imagenet_normalization_fold_matches_keras():
  """Keras' weights='imagenet' model: Rescaling(1/255) -> Normalization(file's mean, variance =
  the standard deviations) -> Rescaling(1/sqrt(std)); jaxmed folds the last into the variance."""
  std = [0.229, 0.224, 0.225]
  layers = [keras.layers.Rescaling(1.0 / 255.0), keras.layers.Normalization(axis=-1),
            keras.layers.Rescaling([1.0 / np.sqrt(s) for s in std])]
  reference = keras.Sequential([keras.Input((4, 5, 3)), *layers])
  norm = layers[1]
  file_weights = {"mean": np.array([0.485, 0.456, 0.406], np.float32),
                  "variance": np.array(std, np.float32), "count": np.array(0)}
  norm.adapt_mean.assign(file_weights["mean"])
  norm.adapt_variance.assign(file_weights["variance"])
  norm.finalize_state()
  x = _pixels(4, 5, seed=3)
  stats = efficientnet.normalization_stats(file_weights)
  ours = efficientnet.Normalization().apply({"batch_stats": stats}, x)
  assert _max_diff(ours, reference.predict(x, verbose=0)) <= 1e-5
  np.testing.assert_allclose(ours, (x / 255 - file_weights["mean"]) / np.array(std), rtol=1e-5)
  other = {"mean": np.array([0.4, 0.5, 0.6]), "variance": np.array([0.05, 0.06, 0.07])}
  np.testing.assert_array_equal(efficientnet.normalization_stats(other)["var"],  # not ImageNet's
                                np.array([0.05, 0.06, 0.07], np.float32))


def test_keras_imagenet_model_end_to_end(tmp_path, monkeypatch):
  """Keras built with weights='imagenet' (its download replaced by a file with the published
  normalization values) and jaxmed reading the same file agree: the fold is the missing layer.
  At Keras' minimum size, 32 px, and an odd width (asymmetric padding on the odd side)."""
  from keras.src.applications import efficientnet as keras_efficientnet
  donor = keras_reference.build("efficientnet_b0", include_top=False, size=SMALL[:2])
  _randomise(donor, seed=7)
  weights = keras_reference.layer_weights(donor)
  norm = next(n for n, w in weights.items() if "variance" in w)
  weights[norm] = {"mean": np.array([0.485, 0.456, 0.406], np.float32),
                   "variance": np.array([0.229, 0.224, 0.225], np.float32), "count": np.array(0)}
  path = tmp_path / "efficientnetb0_notop.h5"
  save_keras_h5(path, weights)
  monkeypatch.setattr(keras_efficientnet.file_utils, "get_file", lambda *a, **k: str(path))
  with keras_reference.zero_random_initializers():  # its weights come from the file
    model = keras.applications.EfficientNetB0(weights="imagenet", include_top=False,
                                              input_shape=SMALL)
  x = _pixels(*SMALL[:2], seed=4)
  variables = efficientnet.ARCHITECTURES["efficientnet_b0"].convert(load_keras_h5(path))
  ours = jit_unoptimised(_net("efficientnet_b0", False).apply, variables, x)(variables, x)
  theirs = model.predict(x, verbose=0)
  assert ours.shape == theirs.shape == (2, 1, 2, 1280)
  _record("efficientnet_b0 imagenet-built 32x45 features", _max_diff(ours, theirs))
  with pytest.raises(ValueError, match="at least 32"):
    jax.eval_shape(_net("efficientnet_b0", False).init, jax.random.PRNGKey(0),
                   jnp.zeros((1, 31, 64, 3)))


def _random_variables(model, x):
  """He-scaled random kernels, zero biases, identity BatchNorm, from shapes only (a jitted
  init compiles slowly on CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(5)

  def fill(path, s):
    leaf = path[-1].key
    if leaf in ("kernel", "depthwise_kernel"):
      fan_in = np.prod(s.shape[:-1]) if leaf == "kernel" else np.prod(s.shape[:2])
      value = rng.standard_normal(s.shape) * np.sqrt(2 / fan_in)
    else:
      value = np.full(s.shape, 1.0 if leaf in ("scale", "var") else 0.0)
    return jax.device_put(value.astype(s.dtype))  # jnp.asarray / jnp.full: a compile per shape

  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_stochastic_depth_only_when_training_a_trainable_stage():
  arch = efficientnet.ARCHITECTURES["efficientnet_b0"]
  net = _net("efficientnet_b0", False)
  x = jnp.asarray(_pixels(32, 32, seed=5).repeat(2, axis=0))  # batch 4
  variables = _random_variables(net, x)

  def training(rng):
    return net.apply(variables, x, train=True, mutable=["batch_stats"],
                     rngs={"dropout": rng})[0]

  def without_rng():  # nothing trains (all stages frozen) or inference: no 'dropout' rng needed
    frozen = net.apply(variables, x, train=True, trainable_from=arch.num_stages,
                       mutable=["batch_stats"])[0]
    return frozen, net.apply(variables, x)

  # Unoptimised XLA: the checks are about which values flow, and compiling is most of their time.
  training = jit_unoptimised(training, jax.random.PRNGKey(0))
  without_rng = jit_unoptimised(without_rng)
  a, b = (np.asarray(training(jax.random.PRNGKey(i))) for i in (1, 2))
  assert np.abs(a - b).max() > 1e-3  # different stochastic-depth masks
  np.testing.assert_array_equal(a, training(jax.random.PRNGKey(1)))  # same rng, same masks
  frozen, inference = without_rng()
  np.testing.assert_allclose(frozen, inference, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# torchvision


@pytest.fixture(scope="module")
def torch():
  return pytest.importorskip("torch", reason="torch is the reference for torchvision's B0")


def _torchvision_efficientnet_b0(torch):
  """torchvision.models.efficientnet's EfficientNet-B0 (MBConv, SqueezeExcitation,
  Conv2dNormActivation: symmetric padding (k - 1) // 2, BatchNorm2d defaults eps 1e-5), in
  eval mode (StochasticDepth and Dropout are identities there, so they are left out)."""
  nn = torch.nn

  def cna(c_in, c_out, kernel, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, *([nn.SiLU()] if act else []))

  class SqueezeExcitation(nn.Module):
    def __init__(self, channels, squeeze):
      super().__init__()
      self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
      scale = self.fc2(nn.functional.silu(self.fc1(x.mean((2, 3), keepdim=True))))
      return torch.sigmoid(scale) * x

  class MBConv(nn.Module):
    def __init__(self, expand, kernel, stride, c_in, c_out):
      super().__init__()
      self.use_res_connect = stride == 1 and c_in == c_out
      hidden = c_in * expand
      layers = [cna(c_in, hidden, 1)] if hidden != c_in else []
      layers += [cna(hidden, hidden, kernel, stride, groups=hidden),
                 SqueezeExcitation(hidden, max(1, c_in // 4)), cna(hidden, c_out, 1, act=False)]
      self.block = nn.Sequential(*layers)

    def forward(self, x):
      y = self.block(x)
      return y + x if self.use_res_connect else y

  setting = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
             (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
             (6, 3, 1, 192, 320, 1)]
  features = [cna(3, 32, 3, 2)]
  for expand, kernel, stride, c_in, c_out, n in setting:
    features.append(nn.Sequential(*[MBConv(expand, kernel, stride if i == 0 else 1,
                                           c_in if i == 0 else c_out, c_out) for i in range(n)]))
  features.append(cna(320, 1280, 1))

  class EfficientNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.features = nn.Sequential(*features)
      self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x):
      return self.classifier(self.features(x).mean((2, 3)))

  model = EfficientNet()
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        c = module.num_features
        uniform = lambda lo, hi: lo + (hi - lo) * torch.rand(c, generator=generator)
        module.weight.copy_(uniform(0.5, 1.5))
        module.bias.copy_(uniform(-0.5, 0.5))
        module.running_mean.copy_(uniform(-0.5, 0.5))
        module.running_var.copy_(uniform(0.5, 2.0))
  return model.eval()


def test_torchvision_b0_parity(torch, tmp_path):
  arch = efficientnet.ARCHITECTURES["torchvision/efficientnet_b0"]
  assert (arch.preprocessing, arch.weight_format) == ("torch", "torch")
  model = _torchvision_efficientnet_b0(torch)
  torch.save(model.state_dict(), tmp_path / "weights.pth")
  state = load_torch_state_dict(tmp_path / "weights.pth")
  with_top = arch.convert(state)
  without_top = arch.convert({k: v for k, v in state.items() if not k.startswith("classifier")})
  for shape, include_top, variables in (((224, 224), True, with_top),
                                        (NON_SQUARE, False, without_top)):
    x = np.random.default_rng(6).standard_normal((2, *shape, 3)).astype(np.float32)
    with torch.no_grad():
      x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())  # NHWC -> NCHW
      expected = (model(x_torch) if include_top else model.features(x_torch)).numpy()
    net = arch.build(alpha=1.0, dtype=jnp.float32, include_top=include_top, num_classes=1000)
    # 224 compiled as training does, the non-square shape unoptimised (see the Keras checks)
    apply = jax.jit(net.apply) if include_top else jit_unoptimised(net.apply, variables, x)
    got = np.asarray(apply(variables, x))
    if not include_top:
      got = got.transpose(0, 3, 1, 2)
    assert got.shape == expected.shape
    _record(f"torchvision/efficientnet_b0 {shape} top={include_top}", _max_diff(got, expected))
  for collection in ("params", "batch_stats"):
    for layer in with_top[collection]:
      assert 0 <= arch.stage_of(layer) <= arch.num_stages, layer
  with pytest.raises(ValueError, match="unexpected"):
    arch.convert({**state, "features.9.0.weight": np.zeros((1, 1, 1, 1), np.float32)})
  with pytest.raises(ValueError, match="missing 'features.8.1.running_var'"):
    arch.convert({k: v for k, v in state.items() if k != "features.8.1.running_var"})


def test_keras_converter_errors():
  with pytest.raises(ValueError, match="one Normalization layer"):
    efficientnet.ARCHITECTURES["efficientnet_b0"].convert({"stem_conv": {"kernel": np.ones(1)}})
  norm = {"normalization": {"mean": np.zeros(3), "variance": np.ones(3), "count": np.array(0)}}
  with pytest.raises(ValueError, match=r"missing layers \['stem_bn'.*unexpected layers \['bog"):
    efficientnet.ARCHITECTURES["efficientnet_b0"].convert(
        {**norm, "stem_conv": {"kernel": np.ones(1)}, "bogus": {"kernel": np.ones(1)}})


def test_report_max_diffs():
  print("\nmax |diff|:", *(f"  {k}: {v:.2e}" for k, v in MAX_DIFFS.items()), sep="\n")
