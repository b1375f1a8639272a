"""Inception v3 (Szegedy et al. 2016) as Keras Applications builds it (`InceptionV3`).

Every conv is Keras' `conv2d_bn`: Conv2D without bias, BatchNormalization(scale=False), ReLU.
The stem's convs are 'valid' except the third; in the blocks, stride-2 convs are 'valid' and the
rest 'same'; the blocks' average pools are 3x3 stride 1 'same' and, as TF's, divide by the number
of real (not padded) inputs in each window. Inputs must be at least 75x75.

Keras leaves these 94 convs and BatchNorms unnamed, so a file calls them `conv2d`, `conv2d_1`,
... (a fresh Keras 3 session), `conv2d_1` ... `conv2d_94` (the official Keras 2 ImageNet file) or
from any other start (a session that had built layers before). Here they have structural names
('stem_conv1', 'mixed0_branch5x5_2', ... and '<name>_bn'), and the converter assigns the file's
layers by Keras' creation order, the names' numeric suffix. Not by the file's layer order: a
legacy file lists `model.layers`, which Keras sorts by depth, interleaving the branches (mixed0's
convs appear as 8, 6, 9, 5, 7, 10, 11).

BatchNorm(scale=False) has no gamma; its module here has no 'scale' parameter either (gamma fixed
at 1, as in Keras), so fine-tuning trains the parameters Keras would and no more.
"""

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmed.models.architecture import Architecture
from jaxmed.models.layers import BatchNorm, Conv
from jaxmed.ops.pooling import max_pool

MIN_SIZE = 75
NUM_STAGES = 12  # stem, mixed0..mixed10; the top ('predictions') is stage 12

# Stem convs in creation order: (name, filters, kernel, stride, padding); max pools after 3 and 5.
STEM = (("stem_conv1", 32, (3, 3), 2, "VALID"), ("stem_conv2", 32, (3, 3), 1, "VALID"),
        ("stem_conv3", 64, (3, 3), 1, "SAME"), ("stem_conv4", 80, (1, 1), 1, "VALID"),
        ("stem_conv5", 192, (3, 3), 1, "VALID"))


def _block_a(pool_filters):  # mixed0..2, 35x35 at 299
  return (("branch1x1", 64, (1, 1), 1, None), ("branch5x5_1", 48, (1, 1), 1, None),
          ("branch5x5_2", 64, (5, 5), 1, "branch5x5_1"), ("branch3x3dbl_1", 64, (1, 1), 1, None),
          ("branch3x3dbl_2", 96, (3, 3), 1, "branch3x3dbl_1"),
          ("branch3x3dbl_3", 96, (3, 3), 1, "branch3x3dbl_2"),
          ("branch_pool", pool_filters, (1, 1), 1, "avg")), \
         ("branch1x1", "branch5x5_2", "branch3x3dbl_3", "branch_pool")


def _block_c(c):  # mixed4..7, 17x17: factorised 7x7 convs of width c
  return (("branch1x1", 192, (1, 1), 1, None), ("branch7x7_1", c, (1, 1), 1, None),
          ("branch7x7_2", c, (1, 7), 1, "branch7x7_1"),
          ("branch7x7_3", 192, (7, 1), 1, "branch7x7_2"), ("branch7x7dbl_1", c, (1, 1), 1, None),
          ("branch7x7dbl_2", c, (7, 1), 1, "branch7x7dbl_1"),
          ("branch7x7dbl_3", c, (1, 7), 1, "branch7x7dbl_2"),
          ("branch7x7dbl_4", c, (7, 1), 1, "branch7x7dbl_3"),
          ("branch7x7dbl_5", 192, (1, 7), 1, "branch7x7dbl_4"),
          ("branch_pool", 192, (1, 1), 1, "avg")), \
         ("branch1x1", "branch7x7_3", "branch7x7dbl_5", "branch_pool")


_BLOCK_E = (  # mixed9, 10, 8x8: Keras' mixed9_{i} and its unnamed concatenate are flattened here
    (("branch1x1", 320, (1, 1), 1, None), ("branch3x3_1", 384, (1, 1), 1, None),
     ("branch3x3_2a", 384, (1, 3), 1, "branch3x3_1"),
     ("branch3x3_2b", 384, (3, 1), 1, "branch3x3_1"), ("branch3x3dbl_1", 448, (1, 1), 1, None),
     ("branch3x3dbl_2", 384, (3, 3), 1, "branch3x3dbl_1"),
     ("branch3x3dbl_3a", 384, (1, 3), 1, "branch3x3dbl_2"),
     ("branch3x3dbl_3b", 384, (3, 1), 1, "branch3x3dbl_2"),
     ("branch_pool", 192, (1, 1), 1, "avg")),
    ("branch1x1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a", "branch3x3dbl_3b",
     "branch_pool"))

# mixed{i}: (convs in Keras' creation order as (suffix, filters, kernel, stride, source), the
# branch ends concatenated in order). source None = the block input, 'avg' = its 3x3 'same'
# average pool; 'max' in the ends = the block input's 3x3 stride-2 'valid' max pool. Stride-2
# convs are 'valid', the others 'same'.
BLOCKS = (
    _block_a(32), _block_a(64), _block_a(64),
    ((("branch3x3", 384, (3, 3), 2, None), ("branch3x3dbl_1", 64, (1, 1), 1, None),
      ("branch3x3dbl_2", 96, (3, 3), 1, "branch3x3dbl_1"),
      ("branch3x3dbl_3", 96, (3, 3), 2, "branch3x3dbl_2")),
     ("branch3x3", "branch3x3dbl_3", "max")),
    _block_c(128), _block_c(160), _block_c(160), _block_c(192),
    ((("branch3x3_1", 192, (1, 1), 1, None), ("branch3x3_2", 320, (3, 3), 2, "branch3x3_1"),
      ("branch7x7x3_1", 192, (1, 1), 1, None), ("branch7x7x3_2", 192, (1, 7), 1, "branch7x7x3_1"),
      ("branch7x7x3_3", 192, (7, 1), 1, "branch7x7x3_2"),
      ("branch7x7x3_4", 192, (3, 3), 2, "branch7x7x3_3")),
     ("branch3x3_2", "branch7x7x3_4", "max")),
    _BLOCK_E, _BLOCK_E)


def stage_of(layer_name: str) -> int:
  """0 = stem, i + 1 = mixed{i} (its convs and BatchNorms), 12 = 'predictions'."""
  if layer_name == "predictions":
    return NUM_STAGES
  if layer_name.startswith("stem_"):
    return 0
  match = re.fullmatch(r"mixed(\d+)_branch\w+", layer_name)
  if match and int(match.group(1)) < len(BLOCKS):
    return int(match.group(1)) + 1
  raise ValueError(f"not an InceptionV3 layer: {layer_name}")


def conv_shapes() -> list[tuple[str, tuple[int, int, int, int]]]:
  """[(module name, kernel shape)] of the 94 convs in Keras' creation order."""
  shapes, channels = [], 3
  for name, filters, (kh, kw), _, _ in STEM:
    shapes.append((name, (kh, kw, channels, filters)))
    channels = filters
  for i, (convs, ends) in enumerate(BLOCKS):
    width = {}
    for suffix, filters, (kh, kw), _, source in convs:
      shapes.append((f"mixed{i}_{suffix}", (kh, kw, width.get(source, channels), filters)))
      width[suffix] = filters
    channels = sum(channels if end == "max" else width[end] for end in ends)
  return shapes


def avg_pool_same(x):
  """Keras' AveragePooling2D(3, 1, 'same'): the mean over each window's real inputs only."""
  return nn.avg_pool(x, (3, 3), (1, 1), "SAME", count_include_pad=False)


class InceptionV3(nn.Module):
  """Feature extractor; returns mixed10 (N, h, w, 2048), or logits with `include_top`.

  Stages below `trainable_from` use moving BN statistics and get no gradient. `alpha` is
  accepted for a uniform build signature and ignored.
  """
  alpha: float = 1.0
  dtype: Any = jnp.float32
  include_top: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False, trainable_from: int = 0):
    if min(x.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"InceptionV3 needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, "
                       f"got {x.shape[1:3]}")

    def freeze_below(y, stage):
      return jax.lax.stop_gradient(y) if stage == trainable_from else y

    def conv_bn(name, y, stage, filters, kernel, stride, padding):  # Keras' `conv2d_bn`
      y = Conv(filters, kernel, (stride, stride), padding, use_bias=False, dtype=self.dtype,
               name=name)(y)
      return BatchNorm(stage < trainable_from or not train, activation="relu", dtype=self.dtype,
                       use_scale=False, name=f"{name}_bn")(y)  # Keras: scale=False

    x = freeze_below(x, 0)
    for name, filters, kernel, stride, padding in STEM:
      x = conv_bn(name, x, 0, filters, kernel, stride, padding)
      if name in ("stem_conv3", "stem_conv5"):
        x = max_pool(x, (3, 3), (2, 2), "VALID")

    for i, (convs, ends) in enumerate(BLOCKS):
      x = freeze_below(x, i + 1)
      out = {None: x}
      if any(source == "avg" for *_, source in convs):
        out["avg"] = avg_pool_same(x)
      for suffix, filters, kernel, stride, source in convs:
        out[suffix] = conv_bn(f"mixed{i}_{suffix}", out[source], i + 1, filters, kernel, stride,
                              "VALID" if stride == 2 else "SAME")
      if "max" in ends:
        out["max"] = max_pool(x, (3, 3), (2, 2), "VALID")
      x = jnp.concatenate([out[end] for end in ends], axis=-1)

    x = freeze_below(x, NUM_STAGES)
    if self.include_top:  # logits; Keras applies softmax inside 'predictions'
      x = nn.Dense(self.num_classes, name="predictions")(x.astype(jnp.float32).mean(axis=(1, 2)))
    return x


_AUTO_NAME = re.compile(r"(conv2d|batch_normalization)(?:_(\d+))?")


def _creation_order(layers: dict[str, dict[str, np.ndarray]]) -> tuple[list[str], list[str]]:
  """The file's auto-named convs and BatchNorms, each sorted by Keras' creation number
  ('conv2d' = 0, 'conv2d_7' = 7). Any other layer with weights but 'predictions' is an error."""
  found = {"conv2d": [], "batch_normalization": []}
  for name, weights in layers.items():
    match = _AUTO_NAME.fullmatch(name)
    if weights and name != "predictions":
      if not match:
        raise ValueError(f"Keras weights do not match InceptionV3: unexpected layer {name!r}")
      found[match.group(1)].append((int(match.group(2) or 0), name))
  return ([n for _, n in sorted(found["conv2d"])],
          [n for _, n in sorted(found["batch_normalization"])])


def _check(file_name: str, module_name: str, got: tuple, want: tuple) -> None:
  if tuple(got) != tuple(want):
    raise ValueError(f"InceptionV3 weights: {file_name} has shape {tuple(got)}, expected "
                     f"{tuple(want)} for {module_name} (Keras creation order)")


def convert_keras(layers: dict[str, dict[str, np.ndarray]]) -> dict:
  """Keras InceptionV3 HDF5 layers (with or without top, auto-names from any start) -> Flax
  variables. The i-th conv and BatchNorm in creation order are the i-th of `conv_shapes()`."""
  convs, norms = _creation_order(layers)
  expected = conv_shapes()
  if len(convs) != len(expected) or len(norms) != len(expected):
    raise ValueError(f"Keras weights do not match InceptionV3: {len(convs)} convs and "
                     f"{len(norms)} BatchNorms, expected {len(expected)} of each")
  params, batch_stats = {}, {}
  for (name, shape), conv, norm in zip(expected, convs, norms):
    if set(layers[conv]) != {"kernel"}:
      raise ValueError(f"InceptionV3 weights: {conv} has {sorted(layers[conv])}, expected kernel")
    if set(layers[norm]) != {"beta", "moving_mean", "moving_variance"}:
      raise ValueError(f"InceptionV3 weights: {norm} has {sorted(layers[norm])}, expected "
                       "beta, moving_mean, moving_variance (BatchNormalization(scale=False))")
    _check(conv, name, layers[conv]["kernel"].shape, shape)
    for key in ("beta", "moving_mean", "moving_variance"):
      _check(f"{norm}/{key}", f"{name}_bn", layers[norm][key].shape, shape[-1:])
    params[name] = {"kernel": jnp.asarray(layers[conv]["kernel"])}
    params[f"{name}_bn"] = {"bias": jnp.asarray(layers[norm]["beta"])}
    batch_stats[f"{name}_bn"] = {"mean": jnp.asarray(layers[norm]["moving_mean"]),
                                 "var": jnp.asarray(layers[norm]["moving_variance"])}
  if layers.get("predictions"):
    top = layers["predictions"]
    if set(top) != {"kernel", "bias"} or top["kernel"].shape[0] != 2048:
      raise ValueError(f"InceptionV3 weights: predictions has "
                       f"{ {k: v.shape for k, v in top.items()} }, expected kernel (2048, classes)")
    params["predictions"] = {k: jnp.asarray(v) for k, v in top.items()}
  return {"params": params, "batch_stats": batch_stats}


ARCHITECTURES = {
    "inception_v3": Architecture(
        build=lambda **kw: InceptionV3(**kw), num_stages=NUM_STAGES, stage_of=stage_of,
        preprocessing="tf", weight_format="keras_h5", convert=convert_keras, min_size=MIN_SIZE),
}
