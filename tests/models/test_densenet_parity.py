"""Numerical parity of jaxmed's DenseNet-121 with Keras Applications and torchvision, through the
real weight files.

Keras DenseNet121 goes model (weights=None, kernels, BatchNorm statistics/gamma/beta and biases
randomised) -> legacy HDF5 (save_keras_h5) -> load_keras_h5 -> convert. torchvision's densenet121 is
re-declared below in plain torch (torchvision is not installed) and goes torch.save ->
load_torch_state_dict -> convert, in the current key style and in the old one ('norm.1', 'conv.2')
that the published densenet121-a639ec97.pth uses. Inputs are already preprocessed.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxmed  # noqa: E402,F401  (XLA flags before jax initialises)
import collections  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import drop_top, jit_unoptimised  # noqa: E402
from jaxmed.models import densenet  # noqa: E402
from jaxmed.weights import keras_reference  # noqa: E402
from jaxmed.weights.keras_h5 import load_keras_h5, save_keras_h5  # noqa: E402
from jaxmed.weights.torch_pickle import load_torch_state_dict  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on the JAX backend", allow_module_level=True)

TOL = 1e-4
NON_SQUARE = (163, 201)  # odd sizes: the transitions' 2x2 average pools drop a row/column
KERAS = densenet.ARCHITECTURES["densenet121"]
TORCHVISION = densenet.ARCHITECTURES["torchvision/densenet121"]


def _input(shape, seed=0):
  return np.random.default_rng(seed).standard_normal((2, *shape, 3)).astype(np.float32)


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _features_and_logits(arch, variables, x):
  """(feature map, logits) of the same weights, one compile for both (XLA shares the trunk)."""
  features = arch.build(alpha=1.0, dtype=jnp.float32, include_top=False, num_classes=1000)
  top = arch.build(alpha=1.0, dtype=jnp.float32, include_top=True, num_classes=1000)
  both = jax.jit(lambda v, x: (features.apply(drop_top(v), x), top.apply(v, x)))
  return tuple(np.asarray(t) for t in both(variables, jnp.asarray(x)))


def _features(arch, variables, x):
  """The feature map at the non-square size. Unoptimised XLA (half the compile time, the same
  values): the 224 checks run jaxmed compiled as training does, this one is about the mapping."""
  model = arch.build(alpha=1.0, dtype=jnp.float32, include_top=False, num_classes=1000)
  return np.asarray(jit_unoptimised(model.apply, variables, x)(variables, x))


def _check_stages(arch, variables):
  for layer in variables["params"]:
    assert 0 <= arch.stage_of(layer) <= arch.num_stages
  assert arch.stage_of("predictions") == arch.num_stages


# ---------------------------------------------------------------------------------------------
# Keras


def _keras_model(include_top, size, seed):
  """Keras DenseNet121 with random kernels, BatchNorm gamma/beta/statistics and biases. Built with
  zero kernels (Keras' random initializers cost ~10 s of compiles a build) and then drawn."""
  model = keras_reference.build("densenet121", include_top=include_top, size=size)
  keras_reference.randomize(model, seed)
  rng = np.random.default_rng(seed)
  draw = {"gamma": lambda n: rng.uniform(0.5, 1.5, n), "beta": lambda n: rng.normal(0, 0.2, n),
          "moving_mean": lambda n: rng.normal(0, 0.2, n),
          "moving_variance": lambda n: rng.uniform(0.5, 2.0, n),
          "bias": lambda n: rng.normal(0, 0.05, n)}
  for layer in model.layers:
    for w in layer.weights:
      if w.name in draw:
        w.assign(draw[w.name](w.shape[0]).astype(np.float32))
  return model


def _via_h5(model, path):
  save_keras_h5(path, keras_reference.layer_weights(model))
  return load_keras_h5(path)


def test_keras_parity_224_with_top(tmp_path):
  model = _keras_model(True, (224, 224), seed=0)
  both = keras.Model(model.input, [model.get_layer("relu").output, model.output])
  x = _input((224, 224))
  expected_features, probs = (np.asarray(t) for t in both.predict(x, verbose=0))
  variables = KERAS.convert(_via_h5(model, tmp_path / "top.h5"))
  _check_stages(KERAS, variables)
  features, logits = _features_and_logits(KERAS, variables, x)
  diff = _max_diff(jax.nn.softmax(logits), probs)
  print(f"densenet121 224 softmax max|diff| = {diff:.2e}")
  assert diff <= TOL
  diff = _max_diff(features, expected_features)
  print(f"densenet121 224 features max|diff| = {diff:.2e} "
        f"(max |y| {np.abs(expected_features).max():.1f})")
  assert features.shape == expected_features.shape == (2, 7, 7, 1024) and diff <= TOL


def test_keras_features_parity_non_square(tmp_path):
  model = _keras_model(False, NON_SQUARE, seed=1)
  x = _input(NON_SQUARE, seed=2)
  expected = np.asarray(model.predict(x, verbose=0))
  variables = KERAS.convert(_via_h5(model, tmp_path / "notop.h5"))
  assert "predictions" not in variables["params"]
  got = _features(KERAS, variables, x)
  diff = _max_diff(got, expected)
  print(f"densenet121 {NON_SQUARE} features max|diff| = {diff:.2e} "
        f"(max |y| {np.abs(expected).max():.1f})")
  assert got.shape == expected.shape and diff <= TOL


def test_keras_convert_reports_layer_mismatch():
  layers = {"conv1_conv": {"kernel": np.zeros((7, 7, 3, 64))},
            "conv2_block7_1_conv": {"kernel": np.zeros((1, 1, 256, 128))}}
  with pytest.raises(ValueError, match="missing layers.*conv1_bn.*unexpected layers.*block7_1"):
    KERAS.convert(layers)


# ---------------------------------------------------------------------------------------------
# torchvision


@pytest.fixture(scope="module")
def torch():
  return pytest.importorskip("torch", reason="torch is the reference for torchvision/densenet121")


def _torchvision_densenet121(torch):
  """torchvision.models.densenet's DenseNet(32, (6, 12, 24, 16), 64), without the unused options
  (dropout, memory_efficient checkpointing); random BatchNorm parameters and statistics."""
  nn, F = torch.nn, torch.nn.functional

  class DenseLayer(nn.Module):
    def __init__(self, num_input_features, growth_rate=32, bn_size=4):
      super().__init__()
      self.norm1 = nn.BatchNorm2d(num_input_features)
      self.relu1 = nn.ReLU(inplace=True)
      self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, stride=1, bias=False)
      self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
      self.relu2 = nn.ReLU(inplace=True)
      self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, stride=1, padding=1,
                             bias=False)

    def forward(self, x):
      return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))

  class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, num_input_features, growth_rate=32):
      super().__init__()
      for i in range(num_layers):
        self.add_module(f"denselayer{i + 1}", DenseLayer(num_input_features + i * growth_rate))

    def forward(self, x):
      for layer in self.values():
        x = torch.cat([x, layer(x)], 1)
      return x

  class Transition(nn.Sequential):
    def __init__(self, num_input_features, num_output_features):
      super().__init__()
      self.norm = nn.BatchNorm2d(num_input_features)
      self.relu = nn.ReLU(inplace=True)
      self.conv = nn.Conv2d(num_input_features, num_output_features, 1, stride=1, bias=False)
      self.pool = nn.AvgPool2d(kernel_size=2, stride=2)

  class DenseNet(nn.Module):
    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64):
      super().__init__()
      self.features = nn.Sequential(collections.OrderedDict([
          ("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)),
          ("norm0", nn.BatchNorm2d(num_init_features)),
          ("relu0", nn.ReLU(inplace=True)),
          ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]))
      num_features = num_init_features
      for i, num_layers in enumerate(block_config):
        self.features.add_module(f"denseblock{i + 1}", DenseBlock(num_layers, num_features))
        num_features += num_layers * growth_rate
        if i != len(block_config) - 1:
          self.features.add_module(f"transition{i + 1}",
                                   Transition(num_features, num_features // 2))
          num_features //= 2
      self.features.add_module("norm5", nn.BatchNorm2d(num_features))
      self.classifier = nn.Linear(num_features, 1000)

    def forward_features(self, x):  # what jaxmed returns: torchvision's forward up to the pool
      return F.relu(self.features(x))

    def forward(self, x):
      out = F.adaptive_avg_pool2d(self.forward_features(x), (1, 1))
      return self.classifier(torch.flatten(out, 1))

  torch.manual_seed(0)
  model = DenseNet()
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        c = module.num_features
        uniform = lambda lo, hi: lo + (hi - lo) * torch.rand(c, generator=generator)
        module.weight.copy_(uniform(0.5, 1.5))
        module.bias.copy_(uniform(-0.3, 0.3))
        module.running_mean.copy_(uniform(-0.3, 0.3))
        module.running_var.copy_(uniform(0.5, 2.0))
  return model.eval()


@pytest.fixture(scope="module")
def torch_model(torch, tmp_path_factory):
  """(the torch reference, its converted variables via a torch.save file)."""
  model = _torchvision_densenet121(torch)
  path = tmp_path_factory.mktemp("densenet") / "densenet121.pth"
  torch.save(model.state_dict(), path)
  return model, TORCHVISION.convert(load_torch_state_dict(path))


def _torch_run(torch, fn, x):
  with torch.no_grad():
    return fn(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()  # NHWC -> NCHW


def test_torchvision_parity_224(torch, torch_model):
  model, variables = torch_model
  _check_stages(TORCHVISION, variables)
  x = _input((224, 224), seed=3)
  expected_logits = _torch_run(torch, model, x)
  expected_features = _torch_run(torch, model.forward_features, x).transpose(0, 2, 3, 1)
  features, logits = _features_and_logits(TORCHVISION, variables, x)
  diff = _max_diff(logits, expected_logits)
  print(f"torchvision/densenet121 224 logits max|diff| = {diff:.2e} "
        f"(max |y| {np.abs(expected_logits).max():.1f})")
  assert diff <= TOL
  diff = _max_diff(features, expected_features)
  print(f"torchvision/densenet121 224 features max|diff| = {diff:.2e}")
  assert features.shape == expected_features.shape and diff <= TOL


def test_torchvision_features_parity_non_square(torch, torch_model):
  model, variables = torch_model
  x = _input(NON_SQUARE, seed=4)
  expected = _torch_run(torch, model.forward_features, x).transpose(0, 2, 3, 1)
  got = _features(TORCHVISION, drop_top(variables), x)
  diff = _max_diff(got, expected)
  print(f"torchvision/densenet121 {NON_SQUARE} features max|diff| = {diff:.2e}")
  assert got.shape == expected.shape and diff <= TOL


def test_torchvision_old_key_style(torch, torch_model, tmp_path):
  """densenet121-a639ec97.pth names a dense layer's modules 'norm.1', 'conv.1', 'norm.2',
  'conv.2' and is in torch's legacy (non-zip) layout: it converts to the same variables."""
  model, variables = torch_model
  old = collections.OrderedDict(
      (re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key), value)
      for key, value in model.state_dict().items())
  assert "features.denseblock1.denselayer1.norm.1.running_var" in old
  path = tmp_path / "old_style.pth"
  torch.save(old, path, _use_new_zipfile_serialization=False)
  converted = TORCHVISION.convert(load_torch_state_dict(path))
  assert jax.tree.structure(converted) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)


def test_torchvision_convert_reports_unexpected_tensors(torch_model):
  model, _ = torch_model
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  with pytest.raises(ValueError, match="unexpected layers.*denselayer7"):
    TORCHVISION.convert({**state, "features.denseblock1.denselayer7.conv1.weight":
                         np.zeros((128, 256, 1, 1), np.float32)})
  del state["features.norm5.running_var"]
  with pytest.raises(ValueError, match="norm5"):
    TORCHVISION.convert(state)


# ---------------------------------------------------------------------------------------------
# Stages and partial unfreezing


def test_stage_of_orders_layers_bottom_to_top():
  for source, arch in (("keras", KERAS), ("torchvision", TORCHVISION)):
    names = densenet.NAMES[source]
    order = [*names["stem"]]
    for b, layers in enumerate(densenet.BLOCKS):
      order += [n for i in range(1, layers + 1) for n in names["layer"](b, i)]
      if b < len(densenet.BLOCKS) - 1:
        order += names["transition"](b)
    order += [names["final"], "predictions"]
    stages = [arch.stage_of(n) for n in order]
    assert stages == sorted(stages) and stages[0] == 0
    assert sorted(set(stages)) == list(range(arch.num_stages + 1))
    for bad in ("conv2_block0_1_conv", "conv2_block7_1_conv", "pool5_bn", "transition4_conv",
                "denseblock1_denselayer0_norm1", "relu"):
      with pytest.raises(ValueError):
        arch.stage_of(bad)


def test_frozen_stages_get_no_gradient_and_keep_statistics():
  model = TORCHVISION.build(alpha=1.0, dtype=jnp.float32, include_top=False, num_classes=1000)
  x = jnp.asarray(_input((32, 32), seed=5))
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)  # a jitted init compiles slowly
  rng = np.random.default_rng(6)

  def fill(path, s):  # He-scaled kernels, identity BatchNorm
    leaf = path[-1].key
    if leaf == "kernel":
      value = rng.standard_normal(s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))
    else:
      value = np.full(s.shape, 1.0 if leaf in ("scale", "var") else 0.0)
    return jax.device_put(value.astype(s.dtype))  # jnp.asarray / jnp.full: a compile per shape

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  params, stats = variables["params"], variables["batch_stats"]
  # Inside the last dense block: the boundary cuts a concatenation, and the backward pass (what
  # takes XLA long to compile) is only three dense layers and the final BatchNorm deep.
  trainable_from = densenet.UNIT_STAGES[3, 14]

  def loss(p):
    y, updates = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                             trainable_from=trainable_from, mutable=["batch_stats"])
    return jnp.sum(y ** 2), updates["batch_stats"]

  grad_fn = jax.jit(jax.grad(loss, has_aux=True)).lower(params).compile(
      compiler_options={"xla_backend_optimization_level": 0,
                        "xla_llvm_disable_expensive_passes": True})
  grads, new_stats = grad_fn(params)
  # On the host: jnp's abs/sum/array_equal compile an XLA program per leaf shape (seconds here).
  for layer, leaves in grads.items():
    frozen = TORCHVISION.stage_of(layer) < trainable_from
    norm = sum(float(np.abs(np.asarray(g)).sum()) for g in jax.tree.leaves(leaves))
    assert (norm == 0) == frozen, (layer, norm)
  for layer in stats:
    same = all(np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(stats[layer]), jax.tree.leaves(new_stats[layer])))
    assert same == (TORCHVISION.stage_of(layer) < trainable_from), layer
