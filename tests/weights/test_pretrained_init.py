"""training.job.init_variables with a weight file: only the head is initialised (the backbone's init is
never compiled), yet the result equals a full model.init with the pretrained backbone put in."""

from pathlib import Path

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import shared_path, small_config
from jaxmed.training import job
from jaxmed.models import create_model
from jaxmed.weights import pretrained


@pytest.mark.parametrize("head", [dict(pooling="avg", hidden=(16,), dropout=0.2),
                                  dict(pooling="max", hidden=(), dropout=0.0)])
def test_head_only_init_equals_the_full_init(head):
  weights = shared_path("weights", "mobilenet_2_5_224_tf_no_top.h5")
  config = small_config(Path("."), "mobilenet")
  config.model.alpha, config.model.weights, config.seed = 0.25, str(weights), 7
  config.model.head.update(head)
  model = create_model(config.model, 3)
  params, batch_stats = job.init_variables(model, config, 64)

  full = jax.jit(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3), jnp.uint8)))(
      jax.random.PRNGKey(7))
  want = tu.flatten_dict(pretrained.load_into(full, config.model))
  got = tu.flatten_dict({"params": params, "batch_stats": batch_stats})
  assert sorted(got) == sorted(want)
  assert any(k[1] == "head" for k in got)
  for key, value in want.items():
    assert got[key].shape == value.shape and got[key].dtype == value.dtype, key
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(value), err_msg=str(key))
  # the backbone really is the file's, not an initialiser's
  converted = tu.flatten_dict(pretrained.read_variables("mobilenet", weights))
  key = next(k for k in converted if k[0] == "params")
  np.testing.assert_array_equal(got[(key[0], "backbone", *key[1:])], converted[key])
