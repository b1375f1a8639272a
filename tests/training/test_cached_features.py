"""Frozen phase on cached backbone features: the same head as training through the backbone."""

import json

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from conftest import small_config, write_label_tree
from jaxmed.training import input_path, optim
from jaxmed.data.load import load_data
from jaxmed.training import job, loop as train, phase_programs
from jaxmed.models import create_model
from jaxmed.models.registry import get_architecture
from jaxmed.training.steps import TrainState


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  return write_label_tree(tmp_path_factory.mktemp("data"),
                          {"train": {"a": 14, "b": 12, "c": 10}, "test": {"a": 4, "b": 4, "c": 4}},
                          size=32)


def _config(root, arch, cache=True):
  config = small_config(root, arch)
  config.model.head.dropout = 0.3  # the cached step must draw the same dropout masks
  config.frozen.epochs, config.finetune.epochs = 2, 0
  config.train.cache_features = cache
  return config


@pytest.mark.parametrize("arch", ["mobilenet_v2", "lenet"])
def test_cached_features_give_the_same_head_parameters(tree, arch):
  config = _config(tree, arch)
  classes, splits, _ = load_data(config)
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  feed = input_path.ResidentFeed(splits, mesh, config, config.train.batch_size)
  model = create_model(config.model, len(classes))
  params, batch_stats = job.init_variables(model, config, config.data.image_size)
  options = phase_programs.phase_options(config, "frozen", get_architecture(arch).num_stages)
  tx, _ = optim.make_optimizer(config.frozen, optim.param_labels(params, arch, None), 4)
  cached = input_path.FeatureFeed(feed, model, params, batch_stats)
  initial = tu.flatten_dict(jax.tree.map(np.asarray, params))

  results = {}
  for name, f in (("images", feed), ("features", cached)):
    state = TrainState(jnp.asarray(0), jax.tree.map(jnp.copy, params),  # steps donate the state
                       jax.tree.map(jnp.copy, batch_stats), tx.init(params), jax.random.PRNGKey(3))
    step = f.make_train_step(model, tx, options, None, None)
    for epoch in (1, 2):
      for batch in f.train_batches(epoch):
        state, metrics = step(state, *batch, np.float32(1.0))
    eval_step = f.make_eval_step(model)
    logits, _ = f.predict(eval_step, "val", state.params, state.batch_stats)
    results[name] = (tu.flatten_dict(jax.tree.map(np.asarray, state.params)),
                     jax.tree.map(np.asarray, state.batch_stats), logits, int(state.step))

  (p_img, bs_img, logits_img, n_img), (p_feat, bs_feat, logits_feat, n_feat) = \
      results["images"], results["features"]
  assert n_img == n_feat == 2 * (len(splits["train"]) // config.train.batch_size)
  moved = 0
  for path, value in p_img.items():
    if path[0] == "backbone":  # frozen: untouched either way
      np.testing.assert_array_equal(p_feat[path], value)
      np.testing.assert_array_equal(p_feat[path], initial[path])
    else:  # the head: same within float32 noise (features computed in another program)
      np.testing.assert_allclose(p_feat[path], value, rtol=1e-4, atol=1e-6)
      moved += not np.allclose(value, initial[path])
  assert moved >= 2  # the head really trained
  jax.tree.map(np.testing.assert_array_equal, bs_feat, bs_img)
  np.testing.assert_allclose(logits_feat, logits_img, rtol=1e-4, atol=1e-5)


def test_train_uses_the_cache_only_without_augmentation(tree, tmp_path, capsys):
  histories = {}
  for cache in (True, False):
    workdir = tmp_path / f"cache_{cache}"
    train.train_and_evaluate(_config(tree, "lenet", cache), workdir)
    assert ("cached backbone features" in capsys.readouterr().out) == cache
    histories[cache] = [json.loads(l) for l in (workdir / "metrics.jsonl").open()]
  assert len(histories[True]) == len(histories[False]) == 4
  for a, b in zip(histories[True], histories[False]):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
  config = _config(tree, "lenet")
  config.augment = {"horizontal_flip": True}
  train.train_and_evaluate(config, tmp_path / "augmented")
  assert "cached backbone features" not in capsys.readouterr().out
