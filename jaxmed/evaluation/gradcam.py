"""Grad-CAM (Selvaraju et al. 2017) on the backbone's last feature map, and heatmap overlays.

The Classifier (models/classifier.py) is preprocess -> backbone -> head; here the two halves run
apart, `features = backbone.apply(...)`, `logits = head.apply(features)`, so the gradient of a
class logit with respect to the feature map A (N, h, w, C) is one `jax.vjp` away.

  method='gradcam':  weights w_c = spatial mean of dlogit/dA_c;  cam = relu(sum_c w_c A_c)
  method='hirescam': cam = relu(sum_c dlogit/dA_c * A_c)  (Draelos & Carin 2020)

For jaxmed's average-pooled heads the gradient is the same at every position, so the two are
identical. With a head that weighs positions differently (max or flatten pooling) only HiResCAM
is guaranteed to show the positions the logit actually depends on.
"""

from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp

from jaxmed.models.preprocess import preprocess

METHODS = ("gradcam", "hirescam")


def _split_variables(variables: dict, part: str) -> dict:
  out = {"params": variables["params"][part]}
  stats = variables.get("batch_stats", {})
  if part in stats:
    out["batch_stats"] = stats[part]
  return out


def make_cam_fn(model, method: str = "gradcam"):
  """jit((variables, uint8 images (N, H, W, 3), class index (N,)) -> (cams (N, H, W) in [0, 1],
  probabilities (N, K))). `model` has .backbone, .head and .preprocessing (a Classifier)."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")

  def cam_fn(variables, images, class_index):
    x = preprocess(images, model.preprocessing)
    features = model.backbone.apply(_split_variables(variables, "backbone"), x, train=False)
    features = features.astype(jnp.float32)
    head_variables = _split_variables(variables, "head")
    logits, vjp = jax.vjp(lambda a: model.head.apply(head_variables, a, train=False), features)
    chosen = jax.nn.one_hot(class_index, logits.shape[-1], dtype=logits.dtype)
    (grads,) = vjp(chosen)  # d logit[n, class_index[n]] / d features[n]
    if method == "gradcam":
      weights = grads.mean(axis=(1, 2), keepdims=True)
      cam = (weights * features).sum(-1)
    else:
      cam = (grads * features).sum(-1)
    cam = jax.image.resize(jax.nn.relu(cam), (cam.shape[0], *images.shape[1:3]), "bilinear")
    peak = cam.max(axis=(1, 2), keepdims=True)  # each map scaled to peak 1 (all zero stays zero)
    cam = jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
    return jnp.clip(cam, 0.0, 1.0), jax.nn.softmax(logits)

  return jax.jit(cam_fn)


def gradcam(model, variables, images, class_index=None, method: str = "gradcam"):
  """Heatmaps (N, H, W) in [0, 1] for `class_index` (default: each image's predicted class),
  and the probabilities (N, K), as numpy."""
  images = jnp.asarray(images, jnp.uint8)
  fn = make_cam_fn(model, method)
  if class_index is None:
    _, probs = fn(variables, images, jnp.zeros(len(images), jnp.int32))
    class_index = jnp.argmax(probs, -1)
  cams, probs = fn(variables, images, jnp.asarray(class_index, jnp.int32).reshape(len(images)))
  return np.asarray(cams), np.asarray(probs)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
  """uint8 RGB image with the heatmap blended in (opacity grows with the heat)."""
  from matplotlib import colormaps
  colours = colormaps[cmap](np.clip(cam, 0, 1))[..., :3] * 255.0
  a = alpha * np.clip(cam, 0, 1)[..., None] ** 0.5
  return ((1 - a) * image.astype(np.float64) + a * colours).round().clip(0, 255).astype(np.uint8)


def save_overlay(path: str | Path, image: np.ndarray, cam: np.ndarray, upscale: int = 0) -> Path:
  """PNG of the original and its overlay side by side; small images are enlarged (nearest) to at
  least 160 px so the heatmap stays visible."""
  from PIL import Image
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  pair = np.concatenate([image, np.full((image.shape[0], 2, 3), 255, np.uint8), overlay(image, cam)], 1)
  scale = upscale or max(1, int(np.ceil(160 / image.shape[0])))
  Image.fromarray(pair).resize((pair.shape[1] * scale, pair.shape[0] * scale),
                               Image.Resampling.NEAREST).save(path)
  return path
