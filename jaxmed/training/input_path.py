"""The two ways images reach the compiled train step (config `data.input_path`):

resident - every split decoded once into one uint8 array, replicated on the device(s); a step
           gathers its batch by index there, so steady-state training moves no image data.
stream   - a grain pipeline (jaxmed/data/stream.py) decodes each batch while training and the
           step receives it, sharded over the 'data' mesh axis; memory holds a few batches
           whatever the dataset's size. Evaluation streams val/test the same way.
'auto' (the default) is resident when the decoded uint8 images of all splits fit in
`data.device_memory_budget_mb`, stream otherwise. Both feeds train on the same
`sampling.epoch_batches`, so for a seed they reach the same parameters.

A feed gives the training loop (training/phase.py) the step builders, example arguments to
compile them with, each epoch's step arguments and the logits of a split. With several processes (jaxmed/runtime/distributed.py) every
process computes the same batches and places only its own devices' shards of them.
"""

import logging

import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxmed.runtime import distributed, import_lock
from jaxmed.evaluation import predictions
from jaxmed.training import steps
from jaxmed.data import sampling

log = logging.getLogger(__name__)
PATHS = ("auto", "resident", "stream")


def decoded_bytes(num_images: int, image_size: int) -> int:
  return num_images * image_size * image_size * 3  # uint8 RGB


def choose(data_config, num_images: int) -> dict:
  """Which path a run takes and why, as recorded in summary.json's data.input_path."""
  setting = data_config.get("input_path", "auto")
  if setting not in PATHS:
    raise ValueError(f"data.input_path must be one of {PATHS}, got {setting!r}")
  budget_mb = float(data_config.get("device_memory_budget_mb", 2048))
  nbytes = decoded_bytes(num_images, data_config.image_size)
  fits = nbytes <= budget_mb * 2**20
  size = (f"{num_images} images decode to {nbytes / 2**20:.3f} MB of uint8 at "
          f"{data_config.image_size} px, {'within' if fits else 'over'} "
          f"data.device_memory_budget_mb={budget_mb:g}")
  if setting == "auto":
    path, reason = ("resident" if fits else "stream"), f"auto: {size}"
  else:
    path, reason = setting, f"data.input_path={setting!r}; {size}"
  return {"path": path, "setting": setting, "reason": reason, "decoded_bytes": nbytes,
          "budget_mb": budget_mb}


def stack_block(rows: list, size: int) -> tuple[np.ndarray, np.ndarray]:
  """`rows` (at most `size` arrays of one shape) stacked on a new leading axis and padded with
  zeros to `size`, and which rows are real: the arguments of a block of steps."""
  if not 0 < len(rows) <= size:
    raise ValueError(f"a block holds 1 to {size} steps, got {len(rows)}")
  block = np.zeros((size, *np.shape(rows[0])), np.asarray(rows[0]).dtype)
  block[:len(rows)] = rows
  return block, np.arange(size) < len(rows)


def make_feed(path: str, splits: dict, mesh, config, batch_size: int):
  if path == "resident":
    return ResidentFeed(splits, mesh, config, batch_size)
  options = stream_module().StreamOptions(threads=config.data.get("stream_threads", 4),
                                          workers=config.data.get("stream_workers", 0))
  return StreamFeed(splits, mesh, config, batch_size, options)


def stream_module():
  """jaxmed.data.stream, which imports grain: only when streaming, and under the import lock
  (grain's import opens etils' process-wide lazy-import window; runtime/import_lock.py)."""
  with import_lock.IMPORTS:
    from jaxmed.data import stream
  return stream


class ResidentFeed:
  """All splits in one device array, replicated over the 'data' mesh axis: steps gather their
  batch by index (sharded over devices), and one compiled eval step serves every split."""
  make_train_step = staticmethod(steps.make_train_step)
  make_eval_step = staticmethod(steps.make_eval_step)
  make_moments_step = staticmethod(steps.make_moments_step)

  def __init__(self, splits: dict, mesh, config, batch_size: int):
    self.splits, self.batch_size, self.eval_batch = splits, batch_size, config.train.eval_batch_size
    self.seed, self.balanced = config.seed, config.train.get("balanced_sampling", False)
    self.sharded = NamedSharding(mesh, P("data"))
    self.block_sharded = NamedSharding(mesh, P(None, "data"))  # (K, B): each step's batch split
    self.replicated = NamedSharding(mesh, P())
    offsets = np.cumsum([0] + [len(v) for v in splits.values()])
    self.ranges = {name: np.arange(offsets[i], offsets[i + 1], dtype=np.int32)
                   for i, name in enumerate(splits)}
    host_images = np.concatenate([v.images for v in splits.values()])
    host_labels = np.concatenate([v.labels for v in splits.values()])
    distributed.assert_same_everywhere(host_images, host_labels, what="images or labels")
    self.images, self.labels = distributed.put((host_images, host_labels), NamedSharding(mesh, P()))
    self.unreadable = []  # files that failed were dropped while decoding (data.skipped_files)

  def example_batch(self) -> tuple:
    return self.images, self.labels, self.put_index(np.zeros(self.batch_size, np.int32))

  def example_eval_batch(self) -> tuple:
    return self.images, self.put_index(np.zeros(self.eval_batch, np.int32))

  def example_block(self, size: int) -> tuple:
    return (self.images, self.labels, *self.put_block([np.zeros(self.batch_size, np.int32)], size))

  def host_steps(self, epoch: int, start_step: int = 0):
    """Each step's batch indices (host numpy) for the epoch from `start_step` on."""
    batches = sampling.epoch_batches(self.seed, epoch, self.splits["train"].labels,
                                     self.batch_size, self.balanced, start_step)
    return iter((batches + self.ranges["train"][0]).astype(np.int32))

  def step_args(self, host_step) -> tuple:
    """Arguments after `state` of the one-step program."""
    return self.images, self.labels, distributed.step_input(host_step, self.sharded)

  def block_args(self, host_steps: list, size: int) -> tuple:
    """Arguments after `state` (and before lr_scale) of a block of `size` steps."""
    return (self.images, self.labels, *self.put_block(host_steps, size, distributed.step_input))

  def train_batches(self, epoch: int, start_step: int = 0):
    """Arguments after `state` for each step of the epoch from `start_step` on."""
    return (self.step_args(s) for s in self.host_steps(epoch, start_step))

  def put_block(self, host_steps: list, size: int, place=distributed.put) -> tuple:
    """(block indices (size, B), active (size,)) on the device in one transfer (or, with
    place=distributed.step_input, for a call); rows past the given steps are padding (index 0,
    inactive)."""
    index, active = stack_block(host_steps, size)
    return tuple(place((index, active), (self.block_sharded, self.replicated)))

  def predict(self, eval_step, split_name: str, params, batch_stats):
    """(logits, labels) of a split."""
    def step(p, bs, images, index):
      return distributed.to_host(eval_step(p, bs, images, self.put_index(index)))
    logits = predictions.predict_logits(step, params, batch_stats, self.images,
                                       self.ranges[split_name], self.eval_batch)
    return logits, self.splits[split_name].labels

  def put_index(self, index: np.ndarray):
    """Batch indices on the device, sharded over 'data' (also used by FeatureFeed)."""
    return distributed.put(index, self.sharded)


class StreamFeed:
  """Batches decoded by a grain pipeline while training, put on the device sharded over 'data'.
  With several processes each decodes the whole global batch and places its own shards (simple
  and correct; decoding only the local shard would save the other processes' share)."""
  make_train_step = staticmethod(steps.make_batch_train_step)
  make_eval_step = staticmethod(steps.make_batch_eval_step)
  make_moments_step = staticmethod(steps.make_batch_moments_step)

  def __init__(self, splits: dict, mesh, config, batch_size: int, options):
    self.splits, self.batch_size, self.eval_batch = splits, batch_size, config.train.eval_batch_size
    self.seed, self.balanced = config.seed, config.train.get("balanced_sampling", False)
    self.image_size, self.options = config.data.image_size, options
    self.sharded = NamedSharding(mesh, P("data"))
    self.block_sharded = NamedSharding(mesh, P(None, "data"))
    self.replicated = NamedSharding(mesh, P())
    listed = "\n".join(p for v in splits.values() for p in v.paths).encode()
    distributed.assert_same_everywhere(np.frombuffer(listed, np.uint8), what="file lists")
    self.unreadable = []  # files found undecodable while streaming, for data.skipped_files

  def example_batch(self) -> tuple:
    return self._put(self._zeros(self.batch_size)), self._put(np.zeros(self.batch_size, np.int32))

  def example_eval_batch(self) -> tuple:
    return (self._put(self._zeros(self.eval_batch)),)

  def example_block(self, size: int) -> tuple:
    return self.block_args([(self._zeros(self.batch_size), np.zeros(self.batch_size, np.int32))],
                           size, distributed.put)

  def host_steps(self, epoch: int, start_step: int = 0):
    """Each step's decoded (images, labels) for the epoch from `start_step` on."""
    stream = stream_module()
    for batch in stream.train_batches(self.splits["train"], self.seed, epoch, self.batch_size,
                                      self.image_size, self.options, self.balanced, start_step):
      self._note_unreadable(batch)
      yield batch["image"], batch["label"]

  def step_args(self, host_step) -> tuple:
    return distributed.step_input((host_step[0], host_step[1]), (self.sharded, self.sharded))

  def block_args(self, host_steps: list, size: int, place=distributed.step_input) -> tuple:
    """The block's images (size, B, H, W, 3), labels and active flags, in one transfer."""
    images, active = stack_block([s[0] for s in host_steps], size)
    labels, _ = stack_block([s[1] for s in host_steps], size)
    return tuple(place((images, labels, active),
                       (self.block_sharded, self.block_sharded, self.replicated)))

  def train_batches(self, epoch: int, start_step: int = 0):
    return (self.step_args(s) for s in self.host_steps(epoch, start_step))

  def predict(self, eval_step, split_name: str, params, batch_stats):
    """(logits, labels) of a split's decodable images; the last batch is padded to one shape."""
    stream = stream_module()
    split = self.splits[split_name]
    logits, labels = [], []
    for batch in stream.batches(split, np.arange(len(split)), self.eval_batch, self.image_size,
                                self.options, drop_remainder=False):
      self._note_unreadable(batch)
      n, ok = len(batch["label"]), batch["error"] == ""
      images = self._put(predictions.pad_rows(batch["image"], self.eval_batch))
      logits.append(distributed.to_host(eval_step(params, batch_stats, images))[:n][ok])
      labels.append(batch["label"][ok])
    if not logits:
      return np.zeros((0, 0), np.float32), np.zeros(0, np.int32)
    return np.concatenate(logits), np.concatenate(labels)

  def _zeros(self, n: int) -> np.ndarray:
    return np.zeros((n, self.image_size, self.image_size, 3), np.uint8)

  def _put(self, array: np.ndarray):
    return distributed.put(array, self.sharded)

  def _note_unreadable(self, batch: dict):
    for message in batch["error"][batch["error"] != ""]:
      if message not in self.unreadable:  # the same file fails again every epoch
        log.warning("skipping %s", message)
        self.unreadable.append(str(message))


class FeatureFeed:
  """The frozen phase without augmentation on top of a ResidentFeed: the backbone (inference
  mode, weights fixed for the phase) runs once per image, and the steps train and evaluate the
  head on the cached pooled features, gathered by index like images. A frozen-phase step then
  costs a head's forward and backward instead of a backbone's forward (Keras users get this by
  hand with `predict` + a small model; here it is the default, `train.cache_features`)."""
  make_train_step = staticmethod(steps.make_feature_train_step)
  make_eval_step = staticmethod(steps.make_feature_eval_step)

  def __init__(self, resident: ResidentFeed, model, params, batch_stats, compile_program=None):
    """`compile_program(name, make, args)` returns the compiled features program (from the
    job's program cache); by default it is jitted here."""
    self.resident, self.splits = resident, resident.splits
    self.unreadable = resident.unreadable
    def make():
      return steps.make_features_step(model)

    features_step = make() if compile_program is None else compile_program("features", make, (
        params, batch_stats, resident.images,
        resident.put_index(np.zeros(resident.eval_batch, np.int32))))
    every = np.arange(len(resident.images), dtype=np.int32)
    rows = predictions.predict_logits(
        lambda p, bs, images, index: distributed.to_host(features_step(p, bs, images,
                                                                       resident.put_index(index))),
        params, batch_stats, resident.images, every, resident.eval_batch)
    self.features = distributed.put(rows, resident.images.sharding)
    self.nbytes = rows.nbytes

  def example_batch(self) -> tuple:
    return (self.features, self.resident.labels,
            self.resident.put_index(np.zeros(self.resident.batch_size, np.int32)))

  def example_eval_batch(self) -> tuple:
    return self.features, self.resident.put_index(np.zeros(self.resident.eval_batch, np.int32))

  def example_block(self, size: int) -> tuple:
    return (self.features, self.resident.labels,
            *self.resident.put_block([np.zeros(self.resident.batch_size, np.int32)], size))

  def host_steps(self, epoch: int, start_step: int = 0):
    return self.resident.host_steps(epoch, start_step)

  def step_args(self, host_step) -> tuple:
    return (self.features, self.resident.labels,
            distributed.step_input(host_step, self.resident.sharded))

  def block_args(self, host_steps: list, size: int) -> tuple:
    return (self.features, self.resident.labels,
            *self.resident.put_block(host_steps, size, distributed.step_input))

  def train_batches(self, epoch: int, start_step: int = 0):
    return (self.step_args(s) for s in self.host_steps(epoch, start_step))

  def predict(self, eval_step, split_name: str, params, batch_stats):
    def step(p, bs, features, index):
      return distributed.to_host(eval_step(p, bs, features, self.resident.put_index(index)))
    logits = predictions.predict_logits(step, params, batch_stats, self.features,
                                       self.resident.ranges[split_name], self.resident.eval_batch)
    return logits, self.splits[split_name].labels
