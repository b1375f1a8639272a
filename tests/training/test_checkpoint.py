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
