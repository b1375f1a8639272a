"""Grad-CAM shows where a model looks: tiny models that can only see the top-left quadrant."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmed.evaluation import gradcam
from jaxmed.models.classifier import Classifier
from jaxmed.models.head import Head

SIZE = 32  # image side; the backbone halves it to a 16x16 feature map


class ConvBackbone(nn.Module):
  """conv 3x3 stride 2 -> ReLU; with `top_left_only` the features outside the top-left quadrant
  are zeroed. Same call signature as jaxmed's backbones."""
  top_left_only: bool = False

  @nn.compact
  def __call__(self, x, *, train=False, trainable_from=0):
    x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), padding="SAME")(x))
    if self.top_left_only:
      h, w = x.shape[1:3]
      inside = (jnp.arange(h)[:, None] < h // 2) & (jnp.arange(w)[None, :] < w // 2)
      x = x * inside[None, :, :, None]
    return x


class TopLeftHead(nn.Module):
  """Averages only the top-left quadrant of the feature map, then Dense: the logits depend on
  nothing else."""
  num_classes: int = 2

  @nn.compact
  def __call__(self, features, *, train=False):
    h, w = features.shape[1:3]
    return nn.Dense(self.num_classes, name="logits")(features[:, :h // 2, :w // 2].mean(axis=(1, 2)))


def _model(backbone, head, seed=0):
  model = Classifier(backbone=backbone, head=head, preprocessing="unit", num_stages=1)
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, SIZE, SIZE, 3), jnp.uint8))
  # Class 0 rises with every feature: its CAM is positive wherever the logit looks.
  logits = dict(variables["params"]["head"]["logits"])
  logits["kernel"] = logits["kernel"].at[:, 0].set(jnp.abs(logits["kernel"][:, 0]) + 0.1)
  params = {**variables["params"], "head": {**variables["params"]["head"], "logits": logits}}
  return model, {**variables, "params": params}


def _images(n=4, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _top_left_share(cams):
  q = SIZE // 2
  return cams[:, :q, :q].sum(axis=(1, 2)) / cams.sum(axis=(1, 2))


def test_head_that_reads_one_quadrant_gets_heat_only_there():
  model, variables = _model(ConvBackbone(), TopLeftHead())
  images = _images()
  # the model is what it claims: erasing everything outside the top-left quadrant (plus the one
  # row and column its stride-2 3x3 conv reads across the border) leaves the logits unchanged
  changed = images.copy()
  changed[:, SIZE // 2 + 1:] = 0
  changed[:, :, SIZE // 2 + 1:] = 0
  assert np.allclose(model.apply(variables, images), model.apply(variables, changed), atol=1e-6)
  cams, probs = gradcam.gradcam(model, variables, images, class_index=[0] * 4, method="hirescam")
  assert cams.shape == (4, SIZE, SIZE) and probs.shape == (4, 2)
  assert cams.max() == pytest.approx(1.0)
  assert np.all(_top_left_share(cams) > 0.95)
  q = SIZE // 2
  assert np.abs(cams[:, q + 2:, :]).max() < 1e-6 and np.abs(cams[:, :, q + 2:]).max() < 1e-6


def test_backbone_that_sees_one_quadrant_gets_heat_only_there():
  model, variables = _model(ConvBackbone(top_left_only=True), Head(2))
  cams, _ = gradcam.gradcam(model, variables, _images(), class_index=[0] * 4)  # classic Grad-CAM
  assert np.all(_top_left_share(cams) > 0.95)
  q = SIZE // 2
  assert cams[:, q + 2:, :].max() < 1e-6 and cams[:, :, q + 2:].max() < 1e-6
  # the heat follows the content: brighter top-left corner pixels, more heat there than at the
  # dark ones (the map is not just a constant over the quadrant)
  assert cams[:, :q, :q].std() > 0.01


def test_gradcam_equals_hirescam_for_average_pooled_heads():
  # jaxmed's Head: average pool -> Dense -> ReLU -> Dense; the gradient is the same everywhere
  model = Classifier(backbone=ConvBackbone(), head=Head(3, "avg", (16,)), preprocessing="unit",
                     num_stages=1)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3), jnp.uint8))
  a, pa = gradcam.gradcam(model, variables, _images(seed=2), method="gradcam")
  b, pb = gradcam.gradcam(model, variables, _images(seed=2), method="hirescam")
  assert np.allclose(a, b, atol=1e-5) and np.allclose(pa, pb)
  direct = jax.nn.softmax(jax.jit(model.apply)(variables, _images(seed=2)))
  assert np.allclose(pa, direct, atol=1e-6)  # the split forward pass is the model's
  with pytest.raises(ValueError):
    gradcam.make_cam_fn(model, "nonsense")


def test_overlay_png(tmp_path):
  from PIL import Image
  image = _images(1)[0]
  cam = np.zeros((SIZE, SIZE))
  cam[:8, :8] = 1.0
  blended = gradcam.overlay(image, cam)
  assert blended.dtype == np.uint8 and np.array_equal(blended[20:, 20:], image[20:, 20:])
  assert not np.array_equal(blended[:8, :8], image[:8, :8])
  path = gradcam.save_overlay(tmp_path / "x" / "cam.png", image, cam)
  with Image.open(path) as im:
    assert im.size == ((2 * SIZE + 2) * 5, SIZE * 5)  # side by side, enlarged to >= 160 px
