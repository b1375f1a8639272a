"""Medical weights by file: a RadImageNet-layout Keras file (`include_top=False`, saved as a whole
Keras model, so its layers sit under `model_weights`) loads through `model.weights=PATH`, with
`model.preprocessing` choosing the normalisation the file was trained with."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import small_config  # noqa: E402
from jaxmed.models import create_model  # noqa: E402
from jaxmed.models.preprocess import preprocess  # noqa: E402
from jaxmed.training import job  # noqa: E402
from jaxmed.weights import keras_reference  # noqa: E402
from jaxmed.weights.keras_h5 import save_keras_h5  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on the JAX backend", allow_module_level=True)


def _radimagenet_style_file(model, path: Path) -> Path:
  """The legacy layout nested under `model_weights`, as Keras 2's `model.save('x.h5')` writes it."""
  flat = path.with_suffix(".flat.h5")
  save_keras_h5(flat, keras_reference.layer_weights(model))
  with h5py.File(flat, "r") as src, h5py.File(path, "w") as dst:
    group = dst.create_group("model_weights")
    for key, value in src.attrs.items():
      group.attrs[key] = value
    for name in src:
      src.copy(src[name], group, name)
    dst.attrs["model_config"] = "{}"  # a whole-model file; jaxmed reads only the weights
  flat.unlink()
  return path


def test_radimagenet_resnet50_file_with_its_preprocessing(tmp_path):
  reference = keras_reference.build("resnet50", include_top=False, size=(64, 64))
  keras_reference.randomize(reference, seed=5)
  path = _radimagenet_style_file(reference, tmp_path / "RadImageNet-ResNet50_notop.h5")

  config = small_config(tmp_path, "resnet50")
  config.model.weights, config.model.preprocessing = str(path), "radimagenet"
  config.model.head.update(dict(pooling="avg", hidden=(), dropout=0.0))
  model = create_model(config.model, 2)
  assert model.preprocessing == "radimagenet"
  params, batch_stats = job.init_variables(model, config, 64)

  images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  backbone = jax.jit(lambda v, x: model.apply(  # one compile beats op-by-op dispatch
      v, x, method=lambda m, x: m.backbone(preprocess(x, m.preprocessing))))
  features = backbone({"params": params, "batch_stats": batch_stats}, jnp.asarray(images))
  # RadImageNet's recipe by hand: caffe preprocess_input (BGR, mean-subtracted), then 1/255.
  x = (images[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32))
  theirs = np.asarray(reference.predict(x / 255.0, verbose=0))
  assert np.abs(np.asarray(features) - theirs).max() <= 1e-4


def test_unknown_preprocessing_is_refused_by_the_config_check(tmp_path):
  from jaxmed.training.config_check import problems
  config = small_config(tmp_path, "resnet50")
  config.model.preprocessing = "radimagenet2"
  found = [text for field, text in problems(config) if field == "model.preprocessing"]
  assert found and "radimagenet" in found[0], found
