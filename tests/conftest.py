"""Shared fixtures: paths to ../shared, tiny label-directory datasets, small model configs."""

import os
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

# model.dtype='auto' would train in bfloat16 on a CPU with AMX and float32 elsewhere: the suite's
# figures must not depend on the machine it runs on, so it runs float32 and the bfloat16 paths are
# tested by switching them on explicitly (tests/ops/test_bfloat16_gemm.py). Before `import jaxmed`:
# settings are read once.
os.environ.setdefault("JAXMED_BFLOAT16", "off")
import jaxmed  # noqa: E402,F401  (XLA flags before JAX initialises)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def signal_after_first_checkpoint(command: list[str], latest: Path, sig, cwd: Path,
                                  timeout: float = 600):
  """Starts `command`, waits until `latest` (a checkpoints/latest folder) holds a step, sends
  `sig`; returns (process, its output). The process must still be running when the step appears."""
  import subprocess
  import time
  proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if latest.exists() and any(p.name.isdigit() for p in latest.iterdir()):
      break
    time.sleep(0.1)
  assert proc.poll() is None, proc.stdout.read()
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=300)
  return proc, out


# XLA without its optimisation passes: about half the compile time of a default jit on a CPU, and
# the same values to float32 rounding. For checks of what a network computes, not how fast.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jit_unoptimised(fn, *args):
  """jax.jit(fn) compiled with FAST_COMPILE for arguments shaped like `args`."""
  import jax
  return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


def drop_top(variables, top=("predictions",)):
  """Converted variables less the classifier layers named in `top` (Keras' default 'predictions'):
  what the no-top network takes."""
  return {kind: {n: v for n, v in tree.items() if n not in top} for kind, tree in variables.items()}


def same_tree(a, b) -> bool:
  """Same structure and bitwise-equal leaves."""
  import jax
  import numpy as np
  return (jax.tree.structure(a) == jax.tree.structure(b)
          and all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def shared_path(*parts) -> Path:
  """A path under ../shared, skipping the test with a reason when it is absent."""
  path = SHARED.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"{path} not present (../shared holds the real datasets and weights)")
  return path


def write_label_tree(root: Path, counts: dict, size: int = 24, seed: int = 0) -> Path:
  """root/<split>/<class>/<i>.png with class-dependent content, e.g. {'train': {'a': 10}}."""
  rng = np.random.default_rng(seed)
  for split, per_class in counts.items():
    for k, (name, n) in enumerate(per_class.items()):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(n):
        image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        image[k * 4:(k + 1) * 4 + 4, :] = 220  # a class-specific bright band
        Image.fromarray(image).save(folder / f"{name}_{i:03d}.png")
  return root


def small_config(root: Path, arch: str = "mobilenet_v2") -> ml_collections.ConfigDict:
  """tests/configs/tiny.py (the demo config shrunk to seconds) on `root`."""
  import tiny_config
  c = tiny_config.get_config()
  c.data.root = str(root)
  c.model.arch = arch
  return c


def run_steps(trainable_from, num_steps=3, bn_train=True, dtype="float32"):
  """Builds the small MobileNetV2 classifier and runs `num_steps` train steps on random images.

  Returns (before, after) flattened {'params', 'batch_stats'} as numpy, and the final state.
  `trainable_from=None` is the frozen phase.
  """
  import flax.traverse_util as tu
  import jax
  import jax.numpy as jnp
  from jaxmed.training import optim
  from jaxmed.models import create_model
  from jaxmed.models.mobilenet_v2 import NUM_STAGES
  from jaxmed.training.steps import StepOptions, TrainState, make_train_step
  config = small_config(Path("."))
  config.model.dtype = dtype
  model = create_model(config.model, 3)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8))
  labels = jnp.asarray(np.arange(16) % 3, jnp.int32)
  variables = jax.jit(lambda k: model.init(k, images[:1]))(jax.random.PRNGKey(0))
  params, stats = variables["params"], variables["batch_stats"]
  label_tree = optim.param_labels(params, config.model.arch, trainable_from)
  tx, _ = optim.make_optimizer(config.finetune, label_tree, steps_per_epoch=num_steps)
  state = TrainState(jnp.asarray(0), params, stats, tx.init(params), jax.random.PRNGKey(1))
  options = StepOptions(trainable_from=NUM_STAGES if trainable_from is None else trainable_from,
                        bn_train=bn_train)
  step = make_train_step(model, tx, options)
  before = jax.tree.map(np.asarray, {"params": params, "batch_stats": stats})
  for i in range(num_steps):
    state, _ = step(state, images, labels, jnp.arange(8) + (i % 2) * 8, jnp.float32(1.0))
  after = jax.tree.map(np.asarray, {"params": state.params, "batch_stats": state.batch_stats})
  return tu.flatten_dict(before), tu.flatten_dict(after), state


@pytest.fixture(scope="session")
def frozen_run():
  """Three frozen-phase steps, shared by the freezing and checkpoint tests (one compile)."""
  return run_steps(None)


@pytest.fixture
def label_tree(tmp_path) -> Path:
  return write_label_tree(tmp_path / "data", {"train": {"a": 12, "b": 12, "c": 8},
                                              "test": {"a": 4, "b": 4, "c": 4}})


_RUN = {}


def trained_workdir(tmp_path_factory) -> Path:
  """One LeNet run on a 3-class label tree, trained once per test session (~30 s)."""
  if "workdir" not in _RUN:
    from jaxmed.training import loop
    root = write_label_tree(tmp_path_factory.mktemp("eval_data"),
                            {"train": {"a": 12, "b": 12, "c": 8}, "test": {"a": 4, "b": 4, "c": 4}},
                            size=32)
    config = small_config(root, arch="lenet")
    config.augment = {"preset": "mri"}  # so the report's augmentation preview has something to show
    workdir = tmp_path_factory.mktemp("eval_run")
    loop.train_and_evaluate(config, workdir)
    _RUN.update(workdir=workdir, data=root)
  return _RUN["workdir"]


os.environ.setdefault("KERAS_BACKEND", "jax")
