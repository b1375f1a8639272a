"""What one checkpoint save costs the CPU: orbax's default (StandardSave, zstd-compressed arrays,
what jaxmed wrote until 2026-12-04) against jaxmed's Checkpoints (uncompressed PyTree items), and
jaxmed's save before its last change (orbax deep-copying the packed arrays, every leaf named again
at each save).

  python benchmarks/checkpoint_save.py [--arch mobilenet_v2] [--image-size 64] [--saves 8] [--json FILE]

The state saved is a fine-tuning TrainState's size and layout for the architecture (the demo's:
MobileNetV2, 4 classes): the model's initial parameters and BatchNorm statistics, plus two
Adam-moment trees of the parameters' shapes filled with small random floats, as after some
training (zero moments, as tx.init leaves them, would compress to nothing and flatter zstd).
The writers' saves alternate, their order rotating from one round to the next (so that no writer
always follows the same one); per writer the median over --saves of:
  call_ms   the save() call (the part the training loop waits for)
  total_ms  to the end of the background write (wait_until_finished)
  cpu_ms    the process's CPU time (all threads) over the same span: what steps running meanwhile
            on a small CPU lose
and the bytes on disk of one checkpoint.
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixed_costs import cpu_model  # noqa: E402


def fine_tuning_state(arch: str, image_size: int, classes: int = 4) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import jaxmed
  from jaxmed.models import create_model
  model_config = jaxmed.config("demo").model  # its head; the backbone named here, random init
  model_config.arch, model_config.weights = arch, None
  model = create_model(model_config, classes)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3), jnp.uint8))
  rng = np.random.default_rng(0)
  moments = [jax.tree.map(lambda p: (rng.standard_normal(p.shape) * 1e-3).astype(p.dtype),
                          variables["params"]) for _ in range(2)]
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
          "opt_state": {"mu": moments[0], "nu": moments[1]}, "step": np.int32(100)}


def _cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _stored_bytes(folder: Path) -> int:
  return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


class OrbaxDefault:
  """jaxmed's save before 2026-12-04: packed arrays through orbax's StandardSave."""

  def __init__(self, root: Path):
    import orbax.checkpoint as ocp
    self.ocp, self.root = ocp, root
    self.manager = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(max_to_keep=1))

  def save(self, step: int, state):
    from jaxmed.training import checkpoint
    packed, layout = checkpoint.pack(state)
    self.manager.save(step, args=self.ocp.args.Composite(
        state=self.ocp.args.StandardSave(packed), meta=self.ocp.args.JsonSave({"layout": layout})))

  def wait(self):
    self.manager.wait_until_finished()


class JaxmedCopying:
  """jaxmed's save from 2026-12-04 morning to night: uncompressed PyTree items through orbax's
  default type handlers, which deep-copy every numpy array before the background write, and the
  leaves' names, dtypes and shapes worked out at every save."""

  def __init__(self, root: Path):
    import orbax.checkpoint as ocp
    self.ocp, self.root = ocp, root
    self.manager = ocp.CheckpointManager(
        root, options=ocp.CheckpointManagerOptions(max_to_keep=1),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(use_compression=False),
                       "meta": ocp.JsonCheckpointHandler()})

  def save(self, step: int, state):
    import jax
    import numpy as np
    from jaxmed.training import checkpoint
    parts, layout = {}, []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
      array = np.asarray(leaf)
      parts.setdefault(array.dtype.name, []).append(array.reshape(-1))
      layout.append(["/".join(checkpoint._names(path)), array.dtype.name, list(array.shape)])
    packed = {dtype: np.concatenate(arrays) for dtype, arrays in parts.items()}
    self.manager.save(step, args=self.ocp.args.Composite(
        state=self.ocp.args.PyTreeSave(packed),
        meta=self.ocp.args.JsonSave({"epoch": step, "best_value": None, "layout": layout})))

  def wait(self):
    self.manager.wait_until_finished()


class Jaxmed:
  """jaxmed's Checkpoints.save_latest as it is."""

  def __init__(self, root: Path):
    from jaxmed.training import checkpoint
    self.ckpt = checkpoint.Checkpoints(root)
    self.root = root / "checkpoints" / "latest"

  def save(self, step: int, state):
    self.ckpt.save_latest(step, state, {"epoch": step})

  def wait(self):
    self.ckpt.wait()


def measure(writers: dict, state, saves: int) -> dict:
  times = {name: {"call_ms": [], "total_ms": [], "cpu_ms": []} for name in writers}
  names = list(writers)
  for step in range(1, saves + 1):
    for name in names[step % len(names):] + names[:step % len(names)]:
      writer = writers[name]
      cpu, t0 = _cpu_s(), time.perf_counter()
      writer.save(step, state)
      t1 = time.perf_counter()
      writer.wait()
      times[name]["call_ms"].append((t1 - t0) * 1e3)
      times[name]["total_ms"].append((time.perf_counter() - t0) * 1e3)
      times[name]["cpu_ms"].append((_cpu_s() - cpu) * 1e3)
  return {name: {**{k: statistics.median(v) for k, v in t.items()},
                 "values": t, "mb_on_disk": _stored_bytes(writers[name].root) / 1e6}
          for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--arch", default="mobilenet_v2")
  parser.add_argument("--image-size", type=int, default=64)
  parser.add_argument("--saves", type=int, default=8)
  parser.add_argument("--json")
  args = parser.parse_args()
  import jax
  import numpy as np
  from jaxmed.runtime import run_info
  state = jax.tree.map(np.asarray, fine_tuning_state(args.arch, args.image_size))
  state_mb = sum(x.nbytes for x in jax.tree.leaves(state)) / 1e6
  with tempfile.TemporaryDirectory(prefix="checkpoint_save_") as tmp:
    writers = {"orbax_default_zstd": OrbaxDefault(Path(tmp) / "default"),
               "jaxmed_copying": JaxmedCopying(Path(tmp) / "copying"),
               "jaxmed_uncompressed": Jaxmed(Path(tmp) / "jaxmed")}
    for writer in writers.values():  # imports and first-save set-up, untimed
      writer.save(0, state)
      writer.wait()
    results = measure(writers, state, args.saves)
    shutil.rmtree(tmp, ignore_errors=True)
  context = {"machine": cpu_model(), "cores": os.cpu_count(), "versions": run_info.versions(),
             "date": datetime.date.today().isoformat(), "state_mb": state_mb,
             "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
  print(f"{context['machine']}, {context['cores']} cores, {context['date']}; {args.arch} "
        f"{args.image_size} px fine-tuning state, {state_mb:.1f} MB")
  print(f"{'writer':22s} {'call_ms':>8s} {'total_ms':>9s} {'cpu_ms':>7s} {'MB':>6s}")
  for name, r in results.items():
    print(f"{name:22s} {r['call_ms']:8.1f} {r['total_ms']:9.1f} {r['cpu_ms']:7.1f} "
          f"{r['mb_on_disk']:6.1f}")
  if args.json:
    Path(args.json).write_text(json.dumps({"context": context, "results": results}, indent=1))


if __name__ == "__main__":
  main()
