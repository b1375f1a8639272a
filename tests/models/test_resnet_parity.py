"""Numerical parity of jaxmed's ResNets with their sources, through the real weight files.

Keras ResNet50 / ResNet50V2 go model -> legacy HDF5 (save_keras_h5) -> load_keras_h5 -> convert;
torchvision ResNets (reference re-declared below in plain torch, as torchvision is not installed)
go model -> torch.save -> load_torch_state_dict -> convert. BatchNorm statistics are randomised so
a wrong eps, a swapped mean/var or a missing layer shows up. Inputs are already preprocessed.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import drop_top, jit_unoptimised, same_tree
from jaxmed.models import resnet, resnet_torchvision
from jaxmed.weights import keras_reference
from jaxmed.weights.keras_h5 import load_keras_h5, save_keras_h5
from jaxmed.weights.torch_pickle import load_torch_state_dict

keras = pytest.importorskip("keras")

TOL = 1e-4
KERAS_APPS = {"resnet50": "ResNet50", "resnet50v2": "ResNet50V2"}


def _input(shape, seed=0):
  return np.random.default_rng(seed).standard_normal((2, *shape, 3)).astype(np.float32)


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---------------------------------------------------------------------------------------------
# Keras


def _keras_model(arch, include_top, size, seed=0):
  """A Keras application with random weights and randomised BatchNorm statistics. Built with zero
  kernels and then drawn: Keras' random initializers cost ~10 s of compiles a build."""
  model = keras_reference.build(arch, include_top=include_top, size=size)
  keras_reference.randomize(model, seed)
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c),
                         rng.uniform(-0.5, 0.5, c), rng.uniform(0.5, 2.0, c)])
  return model


def _via_h5(model, tmp_path):
  """Keras model -> legacy HDF5 file -> {layer: {weight: array}} as read back."""
  path = tmp_path / "weights.h5"
  save_keras_h5(path, {layer.name: {w.name: np.asarray(w) for w in layer.weights}
                       for layer in model.layers})
  return load_keras_h5(path)


def _jaxmed(arch, include_top, num_classes=1000):
  return resnet.ARCHITECTURES[arch].build(alpha=1.0, dtype=jnp.float32, include_top=include_top,
                                          num_classes=num_classes)


@pytest.mark.parametrize("arch", sorted(KERAS_APPS))
def test_keras_parity_224(arch, tmp_path):
  model = _keras_model(arch, True, (224, 224))
  last = "post_relu" if arch == "resnet50v2" else "conv5_block3_out"
  both = keras.Model(model.input, [model.get_layer(last).output, model.output])
  x = _input((224, 224))
  features, probs = both.predict(x, verbose=0)
  layers = _via_h5(model, tmp_path)
  convert = resnet.ARCHITECTURES[arch].convert
  variables = convert(layers)
  del layers["predictions"]  # as in a notop file
  # It converts to the same variables less the top, so one jit runs both modules on one set of
  # arguments and XLA compiles their common trunk once.
  assert same_tree(convert(layers), drop_top(variables))
  top, bare = _jaxmed(arch, True), _jaxmed(arch, False)
  logits, got = jax.jit(lambda v, x: (top.apply(v, x), bare.apply(drop_top(v), x)))(
      variables, x)

  diff = _max_diff(jax.nn.softmax(logits), probs)
  print(f"{arch} 224 top softmax max|diff| = {diff:.2e}")
  assert diff <= TOL

  diff = _max_diff(got, features)
  print(f"{arch} 224 features max|diff| = {diff:.2e} (max |y| {np.abs(features).max():.1f})")
  assert got.shape == features.shape and diff <= TOL


@pytest.mark.parametrize("arch", sorted(KERAS_APPS))
def test_keras_features_parity_non_square(arch, tmp_path):
  model = _keras_model(arch, False, (None, None), seed=1)
  x = _input((160, 192), seed=2)
  expected = model.predict(x, verbose=0)
  variables = resnet.ARCHITECTURES[arch].convert(_via_h5(model, tmp_path))
  # The 224 check runs jaxmed compiled as training does; this one is about the mapping at another
  # shape, which an unoptimised compile (half the time) computes to the same values.
  got = jit_unoptimised(_jaxmed(arch, False).apply, variables, x)(variables, x)
  diff = _max_diff(got, expected)
  print(f"{arch} 160x192 features max|diff| = {diff:.2e} (max |y| {np.abs(expected).max():.1f})")
  assert got.shape == expected.shape and diff <= TOL


def test_keras_convert_reports_layer_mismatch():
  layers = {"conv1_conv": {"kernel": np.zeros((7, 7, 3, 64)), "bias": np.zeros(64)},
            "not_a_layer": {"kernel": np.zeros((1, 1, 1, 1))}}
  with pytest.raises(ValueError, match="missing layers.*conv1_bn.*unexpected layers.*not_a_layer"):
    resnet.ARCHITECTURES["resnet50"].convert(layers)


# ---------------------------------------------------------------------------------------------
# torchvision


@pytest.fixture(scope="module")
def torch():
  return pytest.importorskip("torch", reason="torch is the reference for the torchvision ResNets")


def _torchvision_resnet(torch, block_name, layers):
  """torchvision.models.resnet's BasicBlock / Bottleneck / ResNet, without the unused options."""
  nn = torch.nn

  def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)

  def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

  class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
      super().__init__()
      self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
      self.relu = nn.ReLU(inplace=True)
      self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
      self.downsample = downsample

    def forward(self, x):
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.bn2(self.conv2(out))
      identity = x if self.downsample is None else self.downsample(x)
      return self.relu(out + identity)

  class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
      super().__init__()
      self.conv1, self.bn1 = conv1x1(inplanes, planes), nn.BatchNorm2d(planes)
      self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
      self.conv3, self.bn3 = conv1x1(planes, planes * 4), nn.BatchNorm2d(planes * 4)
      self.relu = nn.ReLU(inplace=True)
      self.downsample = downsample

    def forward(self, x):
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.relu(self.bn2(self.conv2(out)))
      out = self.bn3(self.conv3(out))
      identity = x if self.downsample is None else self.downsample(x)
      return self.relu(out + identity)

  class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
      super().__init__()
      self.inplanes = 64
      self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
      self.bn1 = nn.BatchNorm2d(64)
      self.relu = nn.ReLU(inplace=True)
      self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
      self.layer1 = self._make_layer(block, 64, layers[0])
      self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
      self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
      self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
      self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
      self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
      downsample = None
      if stride != 1 or self.inplanes != planes * block.expansion:
        downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                   nn.BatchNorm2d(planes * block.expansion))
      layers = [block(self.inplanes, planes, stride, downsample)]
      self.inplanes = planes * block.expansion
      layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
      return nn.Sequential(*layers)

    def features(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
      return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))

  model = ResNet(BasicBlock if block_name == "basic" else Bottleneck, layers)
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


@pytest.mark.parametrize("depth, include_top, shape",
                         [("resnet18", True, (224, 224)), ("resnet50", False, (160, 192))])
def test_torchvision_parity(torch, depth, include_top, shape, tmp_path):
  arch = resnet_torchvision.ARCHITECTURES[f"torchvision/{depth}"]
  model = _torchvision_resnet(torch, *resnet_torchvision.DEPTHS[depth])
  torch.save(model.state_dict(), tmp_path / "weights.pth")
  variables = arch.convert(load_torch_state_dict(tmp_path / "weights.pth"))
  x = _input(shape, seed=3)
  with torch.no_grad():
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())  # NHWC -> NCHW
    expected = (model(x_torch) if include_top else model.features(x_torch)).numpy()
  net = arch.build(alpha=1.0, dtype=jnp.float32, include_top=include_top, num_classes=1000)
  # One compile beats op-by-op dispatch; the non-square shape unoptimised (as the Keras checks).
  apply = jax.jit(net.apply) if include_top else jit_unoptimised(net.apply, variables, x)
  got = np.asarray(apply(variables, x))
  if not include_top:
    got = got.transpose(0, 3, 1, 2)
  assert got.shape == expected.shape
  diff = _max_diff(got, expected)
  print(f"torchvision/{depth} {shape} top={include_top} max|diff| = {diff:.2e}")
  assert diff <= TOL


# ---------------------------------------------------------------------------------------------
# Partial unfreezing


def _random_variables(model, x):
  """He-scaled random kernels and identity BatchNorm, from shapes only (a jitted init compiles
  slowly on CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(5)

  def fill(path, s):
    leaf = path[-1].key
    if leaf == "kernel":
      value = rng.standard_normal(s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))
    else:
      value = np.full(s.shape, 1.0 if leaf in ("scale", "var") else 0.0)
    return jax.device_put(value.astype(s.dtype))  # jnp.asarray / jnp.full: a compile per shape

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  return variables["params"], variables["batch_stats"]


@pytest.mark.parametrize("name, arch_module, trainable_from",
                         [("resnet50v2", resnet, 6), ("torchvision/resnet18", resnet_torchvision, 3)])
def test_frozen_stages_get_no_gradient_and_keep_statistics(name, arch_module, trainable_from):
  arch = arch_module.ARCHITECTURES[name]
  model = arch.build(alpha=1.0, dtype=jnp.float32, include_top=False, num_classes=1000)
  x = jnp.asarray(_input((32, 32), seed=4))
  params, stats = _random_variables(model, x)

  def loss(p):
    y, updates = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                             trainable_from=trainable_from, mutable=["batch_stats"])
    return jnp.sum(y ** 2), updates["batch_stats"]

  # Unoptimised XLA: compiling the backward pass of a ResNet otherwise dominates this file's time.
  grad_fn = jax.jit(jax.grad(loss, has_aux=True)).lower(params).compile(
      compiler_options={"xla_backend_optimization_level": 0,
                        "xla_llvm_disable_expensive_passes": True})
  grads, new_stats = grad_fn(params)
  # On the host: jnp's abs/sum/array_equal compile an XLA program per leaf shape (seconds here).
  for layer, leaves in grads.items():
    frozen = arch.stage_of(layer) < trainable_from
    norm = sum(float(np.abs(np.asarray(g)).sum()) for g in jax.tree.leaves(leaves))
    assert (norm == 0) == frozen, (layer, norm)
  for layer in stats:
    same = all(np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(stats[layer]), jax.tree.leaves(new_stats[layer])))
    assert same == (arch.stage_of(layer) < trainable_from), layer
