import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.training import checkpoint


def test_checkpoint_restores_an_identical_state(tmp_path, frozen_run):
  state = frozen_run[2]  # after three steps: non-trivial Adam moments, step and RNG
  ckpt = checkpoint.Checkpoints(tmp_path / "run", "val_accuracy", "max")
  assert ckpt.save(1, state, {"phase": "frozen", "epoch": 1}, {"val_accuracy": 0.5})
  assert not ckpt.save(2, state, {"phase": "frozen", "epoch": 2}, {"val_accuracy": 0.4})
  ckpt.wait()
  zeros = jax.tree.map(jnp.zeros_like, state)
  restored, meta = checkpoint.restore(ckpt.latest, zeros)
  assert meta == {"phase": "frozen", "epoch": 2, "best_value": 0.5}  # best so far rides along
  assert jax.tree.structure(state) == jax.tree.structure(restored)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
  _, best_meta = checkpoint.restore(ckpt.best, {"params": state.params,
                                                "batch_stats": state.batch_stats})
  assert best_meta["epoch"] == 1 and best_meta["val_accuracy"] == 0.5
  assert ckpt.best.latest_step() == 1 and ckpt.latest.latest_step() == 2
  ckpt.save_latest(3, state, {"phase": "frozen", "epoch": 2, "step_in_epoch": 1})  # mid-epoch
  ckpt.close()
  reopened = checkpoint.Checkpoints(tmp_path / "run")  # what a resumed run reads
  assert reopened.latest_meta()["best_value"] == 0.5
  reopened.close()


def test_packed_checkpoint_round_trips_every_dtype_and_shape(tmp_path):
  import jax.numpy as jnp
  import numpy as np
  import orbax.checkpoint as ocp
  tree = {"a": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": jnp.zeros((0,), jnp.float32),
          "c": (jnp.array(7, jnp.int32), jnp.ones((2, 2), jnp.bfloat16) * 1.5),
          "d": jnp.array([1, 2], jnp.uint32)}
  packed, layout = checkpoint.pack(tree)
  assert sorted(packed) == ["bfloat16", "float32", "int32", "uint32"]  # one array per dtype
  leaves = checkpoint.unpack(packed, layout)
  assert sorted(leaves) == ["a", "b", "c/0", "c/1", "d"]
  like = jax.tree.map(jnp.zeros_like, tree)
  manager = ocp.CheckpointManager(tmp_path / "m")
  manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(packed),
                                          meta=ocp.args.JsonSave({"layout": layout})))
  manager.wait_until_finished()
  manager.close()  # read as a later process does: a fresh manager
  manager = ocp.CheckpointManager(tmp_path / "m")
  restored, _ = checkpoint.restore(manager, like)
  for x, y in zip(jax.tree.leaves(tree), jax.tree.leaves(restored)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))
  manager.close()


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  import pytest
  packed, layout = checkpoint.pack({"w": jnp.ones((3,))})
  manager = ocp.CheckpointManager(tmp_path / "m")
  manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(packed),
                                          meta=ocp.args.JsonSave({"layout": layout})))
  manager.wait_until_finished()
  manager.close()
  manager = ocp.CheckpointManager(tmp_path / "m")
  with pytest.raises(ValueError, match="does not hold w"):
    checkpoint.restore(manager, {"w": jnp.ones((4,))})
  manager.close()


def test_an_unpacked_checkpoint_of_an_earlier_version_still_restores(tmp_path):
  import jax.numpy as jnp
  import numpy as np
  import orbax.checkpoint as ocp
  tree = {"params": {"w": np.arange(4, dtype=np.float32)}, "batch_stats": {}}
  manager = ocp.CheckpointManager(tmp_path / "old")
  manager.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                          meta=ocp.args.JsonSave({"epoch": 1})))
  manager.wait_until_finished()
  manager.close()
  manager = ocp.CheckpointManager(tmp_path / "old")
  restored, meta = checkpoint.restore(manager, jax.tree.map(jnp.zeros_like, tree))
  np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), tree["params"]["w"])
  assert meta == {"epoch": 1}
  manager.close()


def test_reading_a_workdir_logs_no_orbax_warnings(tmp_path):
  # evaluate/predict/export open checkpoints read-only; orbax warned twice per manager for that.
  import logging
  import jax.numpy as jnp
  writer = checkpoint.Checkpoints(tmp_path / "run")
  writer.save_latest(1, {"w": jnp.ones((3,))}, {"epoch": 1})
  writer.close()
  seen = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = lambda record: seen.append(record.getMessage())
  logging.getLogger("absl").addHandler(handler)
  try:
    reader = checkpoint.Checkpoints(tmp_path / "run", read_only=True)
    assert reader.latest_meta()["epoch"] == 1 and reader.best.latest_step() is None
    reader.close()
  finally:
    logging.getLogger("absl").removeHandler(handler)
  assert seen == []


def _stored_bytes(folder) -> int:
  return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_checkpoints_are_stored_uncompressed(tmp_path):
  """orbax compresses with zstd by default: 54 of 114 ms of CPU per save of the demo's state,
  taken from the steps that run meanwhile, for 8% of the disk. A megabyte of zeros, which zstd
  stores in a few hundred bytes, must take its megabyte."""
  ckpt = checkpoint.Checkpoints(tmp_path / "run")
  ckpt.save_latest(1, {"w": jnp.zeros((2**18,), jnp.float32)}, {"epoch": 1})
  ckpt.wait()
  ckpt.close()
  assert _stored_bytes(tmp_path / "run" / "checkpoints" / "latest") > 2**20


def test_a_compressed_checkpoint_of_an_earlier_version_resumes(tmp_path):
  """Checkpoints written before 2026-12-04 (orbax's StandardSave, zstd) restore through the
  managers that now write uncompressed PyTree items, for resuming and for evaluation."""
  import orbax.checkpoint as ocp
  from jaxmed.evaluation import trained_run
  tree = {"params": {"w": jnp.arange(6, dtype=jnp.float32)}, "batch_stats": {},
          "opt_state": jnp.ones((2,), jnp.int32)}
  packed, layout = checkpoint.pack(tree)
  manager = ocp.CheckpointManager(tmp_path / "run" / "checkpoints" / "latest")
  manager.save(4, args=ocp.args.Composite(
      state=ocp.args.StandardSave(packed),
      meta=ocp.args.JsonSave({"epoch": 2, "best_value": 0.5, "layout": layout})))
  manager.wait_until_finished()
  manager.close()
  ckpt = checkpoint.Checkpoints(tmp_path / "run")
  assert ckpt.latest_meta()["epoch"] == 2
  restored, meta = checkpoint.restore(ckpt.latest, jax.tree.map(jnp.zeros_like, tree))
  assert meta == {"epoch": 2, "best_value": 0.5}
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(restored)):
    assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
  ckpt.save_latest(5, restored, {"epoch": 3})  # and the run goes on writing its new format
  ckpt.wait()
  again, meta = checkpoint.restore(ckpt.latest, jax.tree.map(jnp.zeros_like, tree))
  assert meta["epoch"] == 3 and np.array_equal(np.asarray(again["params"]["w"]), np.arange(6))
  ckpt.close()
  # An unpacked one (before checkpoints were packed), as evaluation reads it: read-only.
  manager = ocp.CheckpointManager(tmp_path / "old" / "checkpoints" / "latest")
  manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                          meta=ocp.args.JsonSave({"epoch": 1})))
  manager.wait_until_finished()
  manager.close()
  reader = checkpoint.Checkpoints(tmp_path / "old", read_only=True)
  model, meta = trained_run._restore_model_from_latest(reader.latest, None)
  reader.close()
  assert meta == {"epoch": 1} and np.array_equal(np.asarray(model["params"]["w"]), np.arange(6))


def test_a_state_changed_while_its_checkpoint_is_written_is_saved_as_it_was(tmp_path):
  """orbax is told not to copy the arrays it writes in the background (a copy of the whole state
  at each save): that is safe only because pack() hands it arrays that nothing else holds. The
  next step reuses the state's buffers at once; here the leaves, host arrays of which np.asarray
  gives views, are overwritten right after save_latest returns, including a dtype with a single
  leaf (concatenating one array must still copy)."""
  state = {"w": np.arange(2**16, dtype=np.float32), "b": np.ones((3, 4), np.float32),
           "step": np.array(7, np.int32)}
  original = {k: v.copy() for k, v in state.items()}
  packed, _ = checkpoint.pack(state)
  assert not any(np.shares_memory(p, leaf) for p in packed.values() for leaf in state.values())
  ckpt = checkpoint.Checkpoints(tmp_path / "run")
  ckpt.save_latest(1, state, {"epoch": 1})
  for leaf in state.values():
    leaf[...] = -1
  ckpt.wait()
  restored, _ = checkpoint.restore(ckpt.latest, {k: np.zeros_like(v) for k, v in state.items()})
  for name, value in original.items():
    np.testing.assert_array_equal(np.asarray(restored[name]), value)
  ckpt.close()


def test_the_layout_is_reused_only_for_the_same_structure_dtypes_and_shapes():
  """pack() names the leaves once per structure; a tree of the same structure with another dtype
  or shape (another model in the same process) gets its own layout, and unpacks correctly."""
  first = {"a": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros((4,), jnp.int32)}
  assert checkpoint.pack(first)[1] is checkpoint.pack(jax.tree.map(jnp.zeros_like, first))[1]
  for other in ({"a": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros((4,), jnp.int32)},
                {"a": jnp.ones((3, 3), jnp.float32), "b": jnp.arange(5, dtype=jnp.int32)}):
    packed, layout = checkpoint.pack(other)
    leaves = checkpoint.unpack(packed, layout)
    for name, value in other.items():
      assert leaves[name].dtype == value.dtype and leaves[name].shape == value.shape
      np.testing.assert_array_equal(leaves[name].astype(np.float32), np.asarray(value, np.float32))


class _Tagged:
  """A pytree node with an array as static data, as a user's state may have: JAX raises when
  it compares two such structures, so the layout cannot be looked up by structure."""

  def __init__(self, value, tags):
    self.value, self.tags = value, tags


jax.tree_util.register_pytree_node(
    _Tagged, lambda t: ((t.value,), t.tags), lambda tags, children: _Tagged(children[0], tags))


def test_a_state_whose_structure_cannot_be_compared_still_packs():
  for _ in range(2):  # the second lookup compares two structures (equal arrays, other objects)
    tree = {"w": _Tagged(jnp.arange(4, dtype=jnp.float32), np.arange(3)),
            "n": jnp.ones((2,), jnp.int32)}
    packed, layout = checkpoint.pack(tree)
    leaves = checkpoint.unpack(packed, layout)
    np.testing.assert_array_equal(leaves["w/0"], np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(leaves["n"], np.ones((2,), np.int32))
