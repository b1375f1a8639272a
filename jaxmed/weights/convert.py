"""Weight layouts -> Flax variables. Keras layers map by name; torch tensors are transposed.

Flax's BatchNorm keeps gamma/beta as params 'scale'/'bias' and the moving statistics in the
'batch_stats' collection as 'mean'/'var'.
"""

import numpy as np

_BN_KEYS = {"gamma": ("params", "scale"), "beta": ("params", "bias"),
            "moving_mean": ("batch_stats", "mean"), "moving_variance": ("batch_stats", "var")}


def keras_layers_to_variables(layers: dict[str, dict[str, np.ndarray]], rename=None) -> dict:
  """{layer: {weight: array}} from a Keras HDF5 file -> {'params', 'batch_stats'} by layer name.

  `rename(layer_name) -> flax name` handles files whose names differ from the module's.
  """
  variables = {"params": {}, "batch_stats": {}}
  for layer, weights in layers.items():
    if not weights:
      continue
    name = rename(layer) if rename else layer
    for key, array in weights.items():
      collection, flax_key = _BN_KEYS.get(key, ("params", key))
      variables[collection].setdefault(name, {})[flax_key] = np.asarray(array, np.float32)
  return variables


def torch_conv(w: np.ndarray) -> np.ndarray:
  """(out, in/groups, kh, kw) -> (kh, kw, in/groups, out); a depthwise (C, 1, kh, kw) becomes
  (kh, kw, 1, C), reshaped to Keras' (kh, kw, C, 1) by `torch_depthwise`."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)), np.float32)


def torch_depthwise(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1)), np.float32)


def torch_linear(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(w.T, np.float32)


def torch_bn(state: dict, prefix: str) -> tuple[dict, dict]:
  """(params, batch_stats) of one torch BatchNorm2d; num_batches_tracked is not needed."""
  get = lambda k: np.asarray(state[f"{prefix}.{k}"], np.float32)
  return ({"scale": get("weight"), "bias": get("bias")},
          {"mean": get("running_mean"), "var": get("running_var")})


def check_complete(converted: dict, expected: dict, source: str) -> None:
  """Raises naming what is missing or unexpected; shapes must match the model's exactly."""
  import flax.traverse_util as tu
  got = tu.flatten_dict(converted)
  want = tu.flatten_dict(expected)
  missing = sorted("/".join(k) for k in want if k not in got)
  unexpected = sorted("/".join(k) for k in got if k not in want)
  wrong = sorted(f"{'/'.join(k)} {got[k].shape} != {want[k].shape}"
                 for k in want if k in got and tuple(got[k].shape) != tuple(want[k].shape))
  if missing or unexpected or wrong:  # short: the usual cause is a file for another model
    parts = [f"{label} {len(items)} (e.g. {items[0]})" for label, items in
             (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    raise ValueError(f"{source}: weights do not fit the model ({'; '.join(parts)}); is the file "
                     f"for this model.arch and model.alpha?")
