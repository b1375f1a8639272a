"""Precise BatchNorm (train.precise_bn_batches): the recomputed moving statistics equal the
per-channel mean and variance of each BatchNorm's input, computed here with numpy and averaged over
the pass's batches; BatchNorms that do not train keep theirs; both input paths agree; a run with
the pass trains the same parameters and checkpoints other statistics."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import flax.traverse_util as tu
import jax
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from conftest import small_config, write_label_tree
from jaxmed.data import sampling
from jaxmed.data.load import load_data
from jaxmed.data.stream import StreamOptions
from jaxmed.models import create_model
from jaxmed.training import input_path, job as job_lib, precise_bn
from jaxmed.training.program_cache import ProgramCache
from jaxmed.training.steps import StepOptions
from training.test_resume import assert_same_final_state

BATCHES = 3
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = write_label_tree(tmp_path_factory.mktemp("data"),
                          {"train": {"a": 16, "b": 14, "c": 12}, "test": {"a": 4, "b": 4, "c": 4}},
                          size=32)
  config = small_config(root, "lenet")
  classes, splits, _ = load_data(config)
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  model = create_model(config.model, len(classes))
  params, batch_stats = job_lib.init_variables(model, config, config.data.image_size)
  # Statistics far from any batch's, as after a short run with a slow moving average.
  batch_stats = jax.tree.map(lambda s: s * 0 + 7.0, batch_stats)
  return types.SimpleNamespace(root=root, config=config, splits=splits, mesh=mesh, model=model,
                               params=params, batch_stats=batch_stats)


def _job(s):
  return types.SimpleNamespace(
      model=s.model, programs=ProgramCache(None), program_parts={}, timings={"programs": {}},
      steps_per_epoch=len(s.splits["train"]) // s.config.train.batch_size,
      replicated=NamedSharding(s.mesh, P()))


def _feed(s, path):
  if path == "resident":
    return input_path.ResidentFeed(s.splits, s.mesh, s.config, s.config.train.batch_size)
  return input_path.StreamFeed(s.splits, s.mesh, s.config, s.config.train.batch_size,
                               StreamOptions(threads=1, workers=0))


def _numpy_moments(s, options):
  """{'blockN_bn': (mean, var)}: each BatchNorm's input (its conv's output, captured in the same
  training-mode forward) reduced per channel with numpy, averaged over the pass's batches."""
  train = s.splits["train"]
  batches = sampling.epoch_batches(s.config.seed, 0, train.labels, s.config.train.batch_size)
  sums = {}
  for index in batches[:BATCHES]:
    _, state = s.model.apply({"params": s.params, "batch_stats": s.batch_stats},
                             train.images[index], train=True,
                             trainable_from=options.trainable_from, bn_train=True,
                             mutable=["batch_stats", "intermediates"], capture_intermediates=True,
                             rngs={"dropout": jax.random.PRNGKey(0)})
    for path, value in tu.flatten_dict(state["intermediates"]).items():
      if len(path) > 1 and path[-2].endswith("_conv") and path[-1] == "__call__":
        x = np.asarray(value[0], np.float64)
        name = path[-2].replace("_conv", "_bn")
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        old = sums.get(name, (0.0, 0.0))
        sums[name] = (old[0] + mean / BATCHES, old[1] + var / BATCHES)
  return sums


def _by_layer(batch_stats):
  """{'blockN_bn': {'mean': array, 'var': array}}"""
  layers = {}
  for path, value in tu.flatten_dict(jax.tree.map(np.asarray, batch_stats)).items():
    layers.setdefault(path[-2], {})[path[-1]] = value
  return layers


@pytest.mark.parametrize("path", ["resident", "stream"])
def test_statistics_are_the_batch_moments_averaged(setup, path):
  options = StepOptions(trainable_from=1, bn_train=True)  # block1 frozen, blocks 2 and 3 train
  pass_ = precise_bn.PreciseBatchNorm(_job(setup), _feed(setup, path), "finetune", options,
                                      BATCHES)
  got = _by_layer(pass_.recompute(setup.params, setup.batch_stats))
  expected = _numpy_moments(setup, options)
  assert set(got) == {"block1_bn", "block2_bn", "block3_bn"}
  for name in ("block2_bn", "block3_bn"):
    np.testing.assert_allclose(got[name]["mean"], expected[name][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[name]["var"], expected[name][1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[name]["var"], 7.0)
  # block1 is in inference mode in this phase: its statistics are not the pass's business
  np.testing.assert_array_equal(got["block1_bn"]["mean"], 7.0)
  np.testing.assert_array_equal(got["block1_bn"]["var"], 7.0)


def test_nothing_to_recompute_when_no_batchnorm_trains(setup):
  for options in (StepOptions(trainable_from=3, bn_train=True),  # every stage frozen
                  StepOptions(trainable_from=0, bn_train=False)):  # batchnorm='frozen'
    pass_ = precise_bn.PreciseBatchNorm(_job(setup), _feed(setup, "resident"), "finetune",
                                        options, BATCHES)
    out = pass_.recompute(setup.params, setup.batch_stats)
    assert pass_.none_trains and pass_.step is None
    jax.tree.map(np.testing.assert_array_equal, out, setup.batch_stats)


def test_a_run_with_the_pass_trains_the_same_parameters(tmp_path):
  import jaxmed
  from jaxmed.training import checkpoint
  runs = {}
  for batches in (0, 4):
    cfg = jaxmed.config("demo")
    cfg.model.arch, cfg.model.weights, cfg.data.image_size = "lenet", None, 32
    cfg.frozen.epochs, cfg.finetune.epochs = 0, 2
    cfg.train.checkpoint_every_steps = 0
    cfg.train.precise_bn_batches = batches
    runs[batches] = jaxmed.fit(cfg, workdir=tmp_path / f"bn{batches}")
  epochs = runs[4].summary["timings"]["epochs"]
  assert len(epochs) == 2 and all(e["precise_bn_s"] > 0 for e in epochs)
  assert "precise_bn_s" not in runs[0].summary["timings"]["epochs"][0]
  stats = {}
  for batches, run in runs.items():
    ckpt = checkpoint.Checkpoints(run.workdir, read_only=True)
    leaves = checkpoint.read_leaves(ckpt.latest, ckpt.latest.latest_step(), ckpt.latest_meta())
    ckpt.close()
    stats[batches] = leaves
  # final_params_sha256 covers the statistics too, so the parameters are compared here
  params = [n for n in stats[0] if n.startswith("params/")]
  moving = [n for n in stats[0] if n.startswith("batch_stats/")]
  assert stats[0].keys() == stats[4].keys() and params and moving
  for name in params:
    np.testing.assert_array_equal(stats[4][name], stats[0][name], err_msg=name)
  assert all(not np.allclose(stats[0][n], stats[4][n]) for n in moving)


def test_four_devices_recompute_the_statistics_of_one(setup, tmp_path):
  """The pass over batches sharded on 4 devices: the same moments as on one (within float32
  reduction order), so the same checkpoint."""
  for devices in (1, 4):
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    done = subprocess.run(
        [sys.executable, "-m", "jaxmed.train", "--config", "tests/tiny_config.py",
         f"--config.data.root={setup.root}", "--config.model.arch=lenet",
         "--config.train.precise_bn_batches=3", "--config.frozen.epochs=0",
         "--config.train.checkpoint_every_steps=0", f"--workdir={tmp_path / str(devices)}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "XLA_FLAGS": flags})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{devices} device(s)" in done.stdout
    summary = json.loads((tmp_path / str(devices) / "summary.json").read_text())
    assert all(e["precise_bn_s"] > 0 for e in summary["timings"]["epochs"])
  assert_same_final_state(tmp_path / "1", tmp_path / "4", atol=1e-5)
