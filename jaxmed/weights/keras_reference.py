"""Keras 3 Applications as the numerical reference for converted backbones (a test extra).

Needs `keras` with KERAS_BACKEND=jax (set here when unset); no TensorFlow.
"""

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


def build(arch: str, alpha: float = 1.0, include_top: bool = False, size=(224, 224)):
  """keras.applications.<arch>(weights=None) for an input of `size` (height, width)."""
  if arch not in _APPS:
    raise ValueError(f"no Keras reference for {arch!r}; one of {sorted(_APPS)}")
  kwargs = {"alpha": alpha} if arch.startswith("mobilenet") else {}
  return getattr(keras_module().applications, _APPS[arch])(
      weights=None, include_top=include_top, input_shape=(*size, 3), **kwargs)


def randomize_batchnorm(model, seed: int = 0) -> None:
  """Non-trivial BatchNorm statistics, so a converter that swaps or drops them is caught."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if type(layer).__name__ == "BatchNormalization":
      shapes = [tuple(w.shape) for w in layer.weights]
      values = [rng.uniform(0.5, 1.5, s) if w.name in ("gamma", "moving_variance")
                else rng.normal(0, 0.2, s) for w, s in zip(layer.weights, shapes)]
      layer.set_weights([v.astype(np.float32) for v in values])


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
