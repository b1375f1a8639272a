"""Keras 3 Applications as the numerical reference for converted backbones (a test extra).

Needs `keras` with KERAS_BACKEND=jax (set here when unset); no TensorFlow.
"""

import contextlib
import os

import numpy as np

_APPS = {"mobilenet": "MobileNet", "mobilenet_v2": "MobileNetV2", "resnet50": "ResNet50",
         "resnet50v2": "ResNet50V2", "vgg16": "VGG16", "xception": "Xception",
         "efficientnet_b0": "EfficientNetB0", "efficientnet_b1": "EfficientNetB1",
         "efficientnet_b2": "EfficientNetB2", "efficientnet_b3": "EfficientNetB3",
         "efficientnet_v2_b0": "EfficientNetV2B0", "efficientnet_v2_s": "EfficientNetV2S",
         "densenet121": "DenseNet121", "inception_v3": "InceptionV3",
         "convnext_tiny": "ConvNeXtTiny"}


def keras_module():
  os.environ.setdefault("KERAS_BACKEND", "jax")
  try:
    import keras
  except ImportError as e:
    raise ImportError("the Keras reference needs `pip install keras` (jaxmed's test extra)") from e
  return keras


def _host_fill(initializers, found):
  """`found` as a fill on the host, or None. Keras' zeros, ones and constants go through XLA, one
  compile per variable shape (a second or more of each build); numpy's arrays need none."""
  from keras.src.initializers.random_initializers import RandomInitializer
  if isinstance(found, (RandomInitializer, initializers.Zeros)):
    value = 0.0
  elif isinstance(found, initializers.Ones):
    value = 1.0
  elif isinstance(found, initializers.Constant) and np.ndim(found.value) == 0:
    value = float(found.value)
  else:
    return None

  class HostFill(initializers.Initializer):
    def __call__(self, shape, dtype=None):
      try:
        return np.full(shape, value, dtype=np.dtype(dtype or "float32"))
      except TypeError:  # a dtype numpy does not name (bfloat16): Keras' own fill
        return initializers.Constant(value)(shape, dtype)

    def get_config(self):
      return {"value": value}
  return HostFill()


@contextlib.contextmanager
def _zero_random_initializers(keras):
  """Builds with zeros where Keras would draw random kernels: its random initializers compile one
  XLA program per kernel shape (about 35 s of CPU for an EfficientNet-B0), and every reference
  model here gets its weights from `randomize` or a file anyway. Zeros, ones and constants keep
  their values, filled on the host."""
  from keras.src import initializers
  original = initializers.get

  def get(identifier):
    found = original(identifier)
    return _host_fill(initializers, found) or found
  initializers.get = get
  try:
    yield
  finally:
    initializers.get = original


def zero_random_initializers():
  """`build`'s zero kernels for a Keras model built by hand (a test's own top, an application
  with options `build` does not take); whatever is built inside needs `randomize` or a file."""
  return _zero_random_initializers(keras_module())


def build(arch: str, alpha: float = 1.0, include_top: bool = False, size=(224, 224),
          classes: int = 1000):
  """keras.applications.<arch>(weights=None) for an input of `size` (height, width; None for
  any), with `classes` outputs when `include_top`, its kernels zero until `randomize` or
  `load_weights` fills them."""
  if arch not in _APPS:
    raise ValueError(f"no Keras reference for {arch!r}; one of {sorted(_APPS)}")
  kwargs = {"alpha": alpha} if arch.startswith("mobilenet") else {}
  keras = keras_module()
  with _zero_random_initializers(keras):
    return getattr(keras.applications, _APPS[arch])(
        weights=None, include_top=include_top, input_shape=(*size, 3), classes=classes, **kwargs)


def randomize(model, seed: int = 0) -> None:
  """Random weights a converter cannot get right by accident, in a well-conditioned network.

  BatchNorm statistics and LayerNorm / LayerScale gains are drawn (a fresh Keras model has
  identity BatchNorms and ConvNeXt's LayerScale at 1e-6, which would hide a swap or a dropped
  layer), and every kernel is redrawn as normal(0, 1/fan_in): with Keras' glorot kernels under
  non-normalising BatchNorms, deep nets such as EfficientNetV2-S reach 1e7 and float32 rounding
  alone exceeds any parity tolerance."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    kind = type(layer).__name__
    if kind == "BatchNormalization":
      shapes = [tuple(w.shape) for w in layer.weights]
      values = [rng.uniform(0.5, 1.5, s) if w.name in ("gamma", "moving_variance")
                else rng.normal(0, 0.2, s) for w, s in zip(layer.weights, shapes)]
      layer.set_weights([v.astype(np.float32) for v in values])
    elif kind in ("LayerNormalization", "LayerScale"):
      low, high = (0.5, 1.5) if kind == "LayerNormalization" else (0.1, 0.5)
      layer.set_weights([(rng.uniform(low, high, w.shape) if i == 0 else rng.normal(0, 0.1, w.shape))
                         .astype(np.float32) for i, w in enumerate(layer.weights)])
    for w in layer.weights:
      if w.name in ("kernel", "depthwise_kernel", "pointwise_kernel") and len(w.shape) >= 2:
        spatial_only = kind == "DepthwiseConv2D" or w.name == "depthwise_kernel"
        fan_in = int(np.prod(w.shape[:-2] if spatial_only else w.shape[:-1]))
        # float32 draws: VGG16's 25088x4096 fc1 in float64 and then cast takes seconds
        w.assign(rng.standard_normal(w.shape, np.float32) * np.float32(np.sqrt(1.0 / fan_in)))


def layer_weights(model) -> dict[str, dict[str, np.ndarray]]:
  """{layer: {weight name: array}} with the names of a legacy Keras HDF5 weight file.

  Keras 3 calls a DepthwiseConv2D's kernel 'kernel'; the published HDF5 files (Keras 2) call it
  'depthwise_kernel', which is what the converters read.
  """
  out = {}
  for layer in model.layers:
    depthwise = type(layer).__name__ == "DepthwiseConv2D"
    out[layer.name] = {("depthwise_kernel" if depthwise and w.name == "kernel" else w.name):
                       np.asarray(w) for w in layer.weights}
  return out


def keras3_layout(model, scratch_path) -> dict[str, list]:
  """{Keras 3 weight group path: [layer name, [legacy weight names]]} of a model, in its layer order.

  Found by saving: every variable is filled with its own constant, saved with `save_weights`, and
  each stored array is traced back to its variable by value, so the result is what Keras' saver
  wrote, whatever its naming rules (see keras3_h5.py).
  """
  import h5py
  owners = {}
  for layer in model.layers:
    depthwise = type(layer).__name__ == "DepthwiseConv2D"
    for w in layer.weights:
      tag = len(owners) + 1
      w.assign(np.full(w.shape, tag, dtype=w.dtype))
      owners[tag] = (layer.name, "depthwise_kernel" if depthwise and w.name == "kernel" else w.name)
  model.save_weights(scratch_path)
  layout: dict[str, list] = {}
  with h5py.File(scratch_path, "r") as file:
    def visit(name, obj):
      if isinstance(obj, h5py.Group) and name.endswith("/vars") and len(obj):
        tags = [int(np.asarray(obj[str(i)]).flat[0]) for i in range(len(obj))]
        layers = {owners[t][0] for t in tags}
        if len(layers) != 1:
          raise ValueError(f"{name}: variables of several layers {sorted(layers)}")
        layout[name[:-len("/vars")]] = [owners[tags[0]][0], [owners[t][1] for t in tags]]
    file.visititems(visit)
  if sum(len(names) for _, names in layout.values()) != len(owners):
    raise ValueError("some variables were not found in the saved file")
  order = {name: i for i, name in enumerate(layer.name for layer in model.layers)}
  return dict(sorted(layout.items(), key=lambda item: order[item[1][0]]))


def write_keras3_layouts(archs=None) -> None:
  """Regenerates jaxmed/weights/keras3_layouts.json (after adding an architecture)."""
  import json
  import tempfile
  from pathlib import Path
  from jaxmed.weights.keras3_h5 import LAYOUTS
  layouts = {}
  with tempfile.TemporaryDirectory() as tmp:
    for arch in sorted(archs or _APPS):
      model = build(arch, include_top=True)  # the top's layers come last: a prefix is the no-top
      layouts[arch] = keras3_layout(model, str(Path(tmp) / f"{arch}.weights.h5"))
      print(arch, len(layouts[arch]), "groups")
  lines = []  # one line per weight group: reviewable diffs
  for arch, layout in layouts.items():
    groups = ",\n".join(f"  {json.dumps(group)}: {json.dumps(entry)}" for group, entry in layout.items())
    lines.append(f"{json.dumps(arch)}: {{\n{groups}\n}}")
  LAYOUTS.write_text("{\n" + ",\n".join(lines) + "\n}\n")

