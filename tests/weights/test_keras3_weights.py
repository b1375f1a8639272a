"""Keras 3 `.weights.h5` files (jaxmed/weights/keras3_h5.py) load like the legacy HDF5 layout.

For every architecture with a Keras layout: a Keras 3 model with randomised weights is saved both
ways (Keras' own `save_weights` to `.weights.h5`, and the legacy layout through `save_keras_h5`),
and both files must convert to identical variables. The stored layouts must be what Keras writes.
"""

import os
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxmed  # noqa: E402,F401
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxmed.models.registry import ARCHITECTURES  # noqa: E402
from jaxmed.weights import keras3_h5, keras_reference, pretrained  # noqa: E402
from jaxmed.weights.keras_h5 import save_keras_h5  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on the JAX backend", allow_module_level=True)

KERAS_ARCHS = sorted(name for name, a in ARCHITECTURES.items() if a.weight_format == "keras_h5")
# Keras numbers unnamed layers and variables per session (conv2d_7, normalization_12, a LayerScale's
# variable_36): such names differ between the stored layout and a fresh build, and the converters
# map them by order or by role, never by the number.
AUTO_NAME = re.compile(r"^(conv2d|batch_normalization|normalization|layer_normalization|variable)"
                       r"(_\d+)?$")
SIZE = {"inception_v3": (96, 112)}  # above each network's minimum, small enough to be quick


def _randomised(arch, include_top=False, seed=0):
  model = keras_reference.build(arch, include_top=include_top, size=SIZE.get(arch, (96, 112)))
  rng = np.random.default_rng(seed)
  for w in model.weights:  # every variable random, so a swap between any two is caught
    if np.issubdtype(np.dtype(w.dtype), np.floating):
      w.assign(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
  return model


def _flat(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flat(value, prefix + (key,))
    else:
      yield prefix + (key,), np.asarray(value)


def test_every_keras_architecture_has_a_layout():
  assert KERAS_ARCHS and set(KERAS_ARCHS) <= set(keras3_h5.layout_names()), (
      "run `python -m jaxmed.weights keras3-layouts` after adding an architecture")


@pytest.mark.parametrize("arch", KERAS_ARCHS)
def test_keras3_file_converts_like_the_legacy_file_and_layout_is_keras(arch, tmp_path):
  model = _randomised(arch, include_top=True)  # one Keras build per architecture: they are slow
  model.save_weights(tmp_path / "w.weights.h5")
  save_keras_h5(tmp_path / "w.h5", keras_reference.layer_weights(model))
  assert keras3_h5.is_keras3_weights(tmp_path / "w.weights.h5")
  assert not keras3_h5.is_keras3_weights(tmp_path / "w.h5")
  new = dict(_flat(pretrained.read_variables(arch, tmp_path / "w.weights.h5")))
  old = dict(_flat(pretrained.read_variables(arch, tmp_path / "w.h5")))
  assert new.keys() == old.keys() and new
  for key in old:
    np.testing.assert_array_equal(new[key], old[key], err_msg="/".join(key))

  # The stored layout is what Keras writes (this overwrites the model's weights with tags).
  fresh = keras_reference.keras3_layout(model, str(tmp_path / "tags.weights.h5"))
  stored = keras3_h5._layouts()[arch]
  assert list(fresh) == list(stored)
  def same(a, b):  # equal, or the same kind of session-numbered name
    unnumbered = lambda n: re.sub(r"_\d+$", "", n)
    return a == b or bool(AUTO_NAME.match(a) and AUTO_NAME.match(b)
                          and unnumbered(a) == unnumbered(b))
  for group, (layer, names) in fresh.items():
    assert len(names) == len(stored[group][1]), group
    assert all(same(a, b) for a, b in zip(names, stored[group][1])), (group, names)
    assert same(layer, stored[group][0]), (group, layer)


@pytest.mark.parametrize("arch,include_top", [("mobilenet_v2", True), ("convnext_tiny", False)])
def test_keras3_file_runs_like_keras(arch, include_top, tmp_path):
  """Through the parity command: Keras loads its own file, jaxmed converts it. ConvNeXt without
  top ends in an auto-named LayerNorm that the with-top layout files as the head's."""
  from jaxmed.weights.__main__ import parity
  reference = keras_reference.build(arch, include_top=include_top, size=(96, 128))
  keras_reference.randomize(reference, seed=3)
  reference.save_weights(tmp_path / "w.weights.h5")
  result = parity(arch, weights=str(tmp_path / "w.weights.h5"), size=(96, 128),
                  include_top=include_top)
  assert result["max_abs_diff"] <= 1e-4, result


def test_file_of_another_architecture_is_refused_in_one_line(tmp_path):
  _randomised("vgg16").save_weights(tmp_path / "vgg.weights.h5")
  with pytest.raises(ValueError, match=r"is the file for model.arch='mobilenet_v2'\?") as e:
    pretrained.read_variables("mobilenet_v2", tmp_path / "vgg.weights.h5")
  assert "\n" not in str(e.value)
