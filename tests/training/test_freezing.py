"""Keras `trainable=False` semantics: frozen parameters and BatchNorm statistics never move."""

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.training import optim
from jaxmed.models import create_model
from jaxmed.models.mobilenet_v2 import NUM_STAGES, stage_of
from conftest import run_steps, small_config


def _stage(path):
  # (collection, 'backbone', layer, ...) -> stage; head -> None
  return stage_of(path[2]) if path[1] == "backbone" else None


def test_frozen_phase_moves_only_the_head(frozen_run):
  before, after, state = frozen_run
  for path, old in before.items():
    if path[1] == "backbone":
      assert np.array_equal(old, after[path]), f"frozen {path} changed"
  assert any(not np.array_equal(before[p], after[p]) for p in before if p[1] == "head")
  # Frozen parameters hold no optimizer state: Adam's moments exist for head leaves only.
  n_head = len(jax.tree.leaves(state.params["head"]))
  adam_leaves = [x for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0]
  assert len(adam_leaves) == 2 * n_head


def test_partial_unfreeze_moves_exactly_the_top_stages():
  top = NUM_STAGES - 3
  before, after, _ = run_steps(top)
  moved_stats = False
  for path, old in before.items():
    stage = _stage(path)
    if stage is None:
      continue
    same = np.array_equal(old, after[path])
    if stage < top:
      assert same, f"frozen {path} (stage {stage}) changed"
    elif path[0] == "batch_stats":
      moved_stats |= not same
  assert moved_stats, "BatchNorm statistics of trainable stages should update in train mode"
  trainable = [p for p in before if p[0] == "params" and p[1] == "backbone" and _stage(p) >= top]
  assert any(not np.array_equal(before[p], after[p]) for p in trainable)


def test_multi_transform_labels_cover_every_parameter(tmp_path):
  config = small_config(tmp_path)
  model = create_model(config.model, 2)
  params = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3), jnp.uint8)),
                          jax.random.PRNGKey(0))["params"]
  labels = tu.flatten_dict(optim.param_labels(params, "mobilenet_v2", 5))
  assert set(labels.values()) == {"trainable", "frozen"}
  for path, label in labels.items():
    if path[0] == "head":
      assert label == "trainable"
    else:
      assert label == ("frozen" if stage_of(path[1]) < 5 else "trainable")


def test_the_compiled_optimizer_init_equals_tx_init(tmp_path, monkeypatch):
  """Each phase's optimizer state comes from one compiled tx.init (phase_programs.optimizer_init_program,
  cached like the train steps): the same tree, leaf for leaf, as tx.init run op by op, masked
  (frozen) parameters included."""
  from conftest import write_label_tree
  from jaxmed.training.job import prepare_job
  from jaxmed.training.phase_programs import optimizer_init_program, phase_optimizer
  monkeypatch.setenv("JAXMED_CACHE", str(tmp_path / "cache"))
  root = write_label_tree(tmp_path / "data", {"train": {"a": 12, "b": 12}, "test": {"a": 2, "b": 2}})
  job = prepare_job(small_config(root))
  for name in ("frozen", "finetune"):
    tx = phase_optimizer(job, name)[2]
    eager = tx.init(job.params)
    for attempt in ("compiled", "from the program cache"):
      compiled = optimizer_init_program(job, name, tx)(job.params)
      assert jax.tree.structure(compiled) == jax.tree.structure(eager), (name, attempt)
      for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(eager)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b)), (name, attempt)
  assert job.timings["program_cache"]["optimizer_init_finetune"] == "hit"
