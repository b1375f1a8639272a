"""Input normalisation per weight set. It travels with the weights (see models/registry.py), so a
backbone is never fed the normalisation of another training recipe."""

import jax.numpy as jnp
import numpy as np

# Keras' `imagenet_utils.preprocess_input` modes and torchvision's ImageNet mean/std. numpy, not
# jnp: a device array made at import would start the backend before jax.distributed.initialize.
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)

MODES = ("tf", "torch", "caffe", "unit", "raw", "radimagenet")


def preprocess(images, mode: str, dtype=jnp.float32):
  """uint8 RGB (N, H, W, 3) -> the float input a backbone expects."""
  x = images.astype(jnp.float32)
  if mode == "tf":        # Keras MobileNet*, ResNet*V2, Xception: [-1, 1]
    x = x / 127.5 - 1.0
  elif mode == "torch":   # torchvision and Keras 'torch' mode: ImageNet mean/std on [0, 1]
    x = (x / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
  elif mode == "caffe":   # Keras ResNet50 (v1), VGG16: BGR, mean-subtracted, not scaled
    x = x[..., ::-1] - _CAFFE_MEAN_BGR
  elif mode == "unit":    # from-scratch models: [0, 1]
    x = x / 255.0
  elif mode == "raw":     # [0, 255]: nets that normalise inside (Keras EfficientNet*, ConvNeXt)
    pass
  elif mode == "radimagenet":
    # RadImageNet's own training code (BMEII-AI/RadImageNet acl/acl_train.py) feeds Keras'
    # ImageDataGenerator(rescale=1/255, preprocessing_function=imagenet_utils.preprocess_input):
    # the generator applies the function first (caffe: BGR, mean-subtracted), then the rescale.
    x = (x[..., ::-1] - _CAFFE_MEAN_BGR) / 255.0
  else:
    raise ValueError(f"unknown preprocessing mode {mode!r}; one of {MODES}")
  return x.astype(dtype)
