"""A training config checked before any work starts: a typo (`optimizer='adma'`, `batch_size=-3`)
would otherwise surface minutes later as a traceback from deep inside data loading or tracing,
or, for fields the code only compares against one value (`batchnorm`, `evaluate`, `dtype`), not
at all. Every problem is collected and reported as ONE line (the CLI prints one line per error).

The allowed values mirror what the code that reads each field accepts (named beside each rule),
so a config that trains today always passes; when that code changes, change the rule with it.
"""

import math
import numbers
import os
import re
import typing

from jaxmed.models.preprocess import MODES as PREPROCESSING_MODES
from jaxmed.runtime.cli import UserError
from jaxmed.runtime.suggest import nearest
from jaxmed.training.input_path import PATHS
from jaxmed.training.phase import PHASES

# The metrics phase.Phase._end_epoch hands to the checkpoint and the callbacks.
MONITORED = ("val_accuracy", "val_loss", "val_macro_f1", "val_balanced_accuracy", "val_auc")
OPTIMIZERS = ("adam", "adamax", "adamw", "sgd")  # optim.make_optimizer
SCHEDULES = ("constant", "cosine", "step")  # optim.make_schedule
POOLINGS = ("avg", "max", "flatten")  # models/head.py Head
# What losses.class_weights and discover.load_dataset take for "off"; the command line turns
# `--config.train.class_weights=None` into the string 'None'.
OFF = (None, "", "none", "None")

_MISSING = object()


class Rule(typing.NamedTuple):
  path: str  # dotted, e.g. 'train.batch_size'
  check: typing.Callable  # value -> None when fine, else what is allowed ('must be ...')
  required: bool = False  # read by attribute (no default): a missing field is an error


# ---------------------------------------------------------------------------- value checks

def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _integer(lo=None, hi=None):
  text = ("must be a positive integer" if lo == 1 and hi is None else
          f"must be an integer >= {lo}" if hi is None else f"must be an integer in [{lo}, {hi}]")

  def check(v):
    ok = _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
    return None if ok else text
  return check


def _number(lo, hi=None, *, lo_open=False, hi_open=False):
  if hi is None:
    text = f"must be a number {'>' if lo_open else '>='} {lo:g}"
  else:
    text = f"must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

  def check(v):
    # Comparisons written so that NaN fails them all.
    ok = _is_number(v) and (v > lo if lo_open else v >= lo) and (
        hi is None or (v < hi if hi_open else v <= hi))
    return None if ok else text
  return check


def _steps_per_dispatch(v):
  """'auto' or an integer in [1, 1024], also as the string the command line gives for a
  str field ('8')."""
  if v == "auto" or (_is_int(v) and 1 <= v <= 1024) or (
      isinstance(v, str) and v.isdigit() and 1 <= int(v) <= 1024):
    return None
  return "must be 'auto' or an integer in [1, 1024]"


def _did_you_mean(value, options) -> str:
  best = nearest(value, options)
  return f" (did you mean {best!r}?)" if best else ""


def _choice(options, text=None, off=()):
  """One of `options` (a tuple, or a function giving it: the registry is imported only when
  checked); `off` lists the values the reading code takes for None."""
  def check(v):
    choices = options() if callable(options) else options
    if (isinstance(v, str) or v is None) and (v in choices or v in off):
      return None
    return (text or f"must be one of {', '.join(choices)}") + _did_you_mean(v, choices)
  return check


def _flag(v):
  # Read by truthiness, so 0 and 1 train as False and True (numpy's bool is no Python bool).
  ok = type(v).__name__ in ("bool", "bool_") or (_is_int(v) and v in (0, 1))
  return None if ok else "must be True or False"


def _path_like(v):
  ok = isinstance(v, (str, os.PathLike)) and str(v) != ""
  return None if ok else "must be a dataset folder, archive, .npz or tfds:NAME"


def _hidden(v):
  ok = isinstance(v, (list, tuple)) and all(_is_int(w) and w > 0 for w in v)
  return None if ok else "must be a sequence of positive integers, e.g. (128,) or ()"


def _unfreeze(v):
  # phase_programs.phase_options: 'all', else int(v) stages from the top ('3' from the CLI).
  if v == "all" or (_is_int(v) and v >= 0) or (isinstance(v, str) and v.isdigit()):
    return None
  return "must be 'all' or the number of top backbone stages to train (an integer >= 0)"


def _class_weights(v):
  text = ("must be None, 'balanced' or non-negative weights per class, comma-separated "
          "(e.g. '1,3'), not all zero")
  if v is None or (isinstance(v, str) and v in OFF + ("balanced",)):
    return None
  try:  # losses.class_weights: a comma-separated string or a sequence of numbers
    weights = [float(w) for w in (v.split(",") if isinstance(v, str) else v)]
  except (TypeError, ValueError):
    return text
  ok = weights and all(math.isfinite(w) and w >= 0 for w in weights) and any(weights)
  return None if ok else text


def _architectures():
  from jaxmed.models.registry import ARCHITECTURES
  return tuple(sorted(ARCHITECTURES))


def _weights(v):
  # job.init_variables: None/'None'/'' -> random init; pretrained.resolve: 'imagenet' or a file.
  if v is None or (isinstance(v, str) and (v.lower() in ("none", "") or v == "imagenet")):
    return None
  if isinstance(v, (str, os.PathLike)) and os.path.isfile(os.path.expanduser(v)):
    return None
  return "must be 'imagenet', None or an existing weight file"


_MODES = _choice(("min", "max"))
_MONITOR = _choice(MONITORED)

# ---------------------------------------------------------------------------- the rules

RULES = [
    Rule("seed", _integer(0), True),  # numpy's default_rng rejects negative seeds
    Rule("data.root", _path_like, True),
    Rule("data.image_size", _integer(16, 1024), True),
    Rule("data.val_fraction", _number(0, 0.9), True),
    Rule("data.input_path", _choice(PATHS)),
    Rule("data.device_memory_budget_mb", _number(0, lo_open=True)),
    Rule("data.stream_threads", _integer(1)),
    Rule("data.stream_workers", _integer(0)),
    Rule("data.dedupe", _choice(("cross_split",), "must be None or 'cross_split'", off=OFF)),
    Rule("data.group_by", _choice(("copies",), "must be None or 'copies'", off=OFF)),
    Rule("data.synthetic", _flag),
    Rule("model.arch", _choice(_architectures), True),
    Rule("model.dtype", _choice(("auto", "float32", "bfloat16"))),
    Rule("model.alpha", _number(0, lo_open=True)),
    Rule("model.weights", _weights),
    # None: the architecture's own; set it for a weight file trained with another normalisation
    Rule("model.preprocessing", _choice(PREPROCESSING_MODES, off=OFF)),
    Rule("model.head.pooling", _choice(POOLINGS), True),
    Rule("model.head.hidden", _hidden, True),
    Rule("model.head.dropout", _number(0, 1, hi_open=True), True),
    Rule("train.batch_size", _integer(1), True),
    Rule("train.eval_batch_size", _integer(1), True),
    Rule("train.label_smoothing", _number(0, 1, hi_open=True), True),
    Rule("train.checkpoint_metric", _MONITOR, True),
    Rule("train.checkpoint_mode", _MODES, True),
    Rule("train.evaluate", _choice(("best", "last")), True),
    Rule("train.checkpoint_every_steps", lambda v: None if v is None else _integer(0)(v)),
    Rule("train.class_weights", _class_weights),
    Rule("train.focal_gamma", _number(0)),
    Rule("train.balanced_sampling", _flag),
    Rule("train.compilation_cache", _flag),
    Rule("data.decoded_cache", _flag),
    Rule("train.cache_features", _flag),
    Rule("train.precise_bn_batches", _integer(0)),
    Rule("train.steps_per_dispatch", _steps_per_dispatch),  # see phase_programs.py
]
for _phase in PHASES:
  RULES += [
      Rule(f"{_phase}.epochs", _integer(0), True),
      Rule(f"{_phase}.learning_rate", _number(0, lo_open=True), True),
      Rule(f"{_phase}.optimizer", _choice(OPTIMIZERS)),
      Rule(f"{_phase}.schedule", _choice(SCHEDULES)),
      Rule(f"{_phase}.warmup_epochs", _number(0)),
      Rule(f"{_phase}.weight_decay", _number(0)),
      Rule(f"{_phase}.momentum", _number(0, 1)),
      Rule(f"{_phase}.step_epochs", _number(0, lo_open=True)),
      Rule(f"{_phase}.step_factor", _number(0, lo_open=True)),
      Rule(f"{_phase}.unfreeze", _unfreeze),
      Rule(f"{_phase}.batchnorm", _choice(("train", "frozen"))),
      Rule(f"{_phase}.backbone_lr_multiplier", _number(0)),
  ]

# Per phase, checked only when the callback is enabled: phase.make_callbacks reads nothing else.
CALLBACK_RULES = {
    "reduce_on_plateau": [
        Rule("factor", _number(0, 1, lo_open=True, hi_open=True), True),
        Rule("patience", _integer(0), True),
        Rule("min_scale", _number(0)),
        Rule("cooldown", _integer(0)),
        Rule("min_delta", _number(0)),
        Rule("monitor", _MONITOR, True),
        Rule("mode", _MODES, True)],
    "early_stopping": [
        Rule("patience", _integer(0), True),
        Rule("min_delta", _number(0)),
        Rule("monitor", _MONITOR, True),
        Rule("mode", _MODES, True)],
}


# ---------------------------------------------------------------------------- checking

def _lookup(config, path: str):
  """The value at a dotted path, or (_MISSING, the first missing prefix)."""
  node, parts = config, path.split(".")
  for i, key in enumerate(parts):
    if not hasattr(node, "keys") or key not in node.keys():
      return _MISSING, ".".join(parts[:i + 1])
    node = node[key]
  return node, None


def _show(v) -> str:
  text = repr(v)  # long values keep their end: a path's file name is what tells
  return text if len(text) <= 100 else "'..." + text[-96:]


def _apply(config, rules, prefix: str = "") -> list[tuple[str, str]]:
  """(field, message) for each rule the config breaks; a missing section is named once."""
  problems, missing = [], set()
  for rule in rules:
    field = prefix + rule.path
    value, absent = _lookup(config, field)
    if value is _MISSING:
      if rule.required and absent not in missing:
        missing.add(absent)
        what = rule.check(_MISSING) if absent == field else "a required section"
        problems.append((absent, f"config {absent} is missing: {what}"))
      continue
    allowed = rule.check(value)
    if allowed:
      problems.append((field, f"config {field}={_show(value)}: {allowed}"))
  return problems


def _callback_problems(config) -> list[tuple[str, str]]:
  problems = []
  for phase in PHASES:
    for name, rules in CALLBACK_RULES.items():
      section, _ = _lookup(config, f"{phase}.{name}")
      if section is _MISSING or not section:
        continue
      field = f"{phase}.{name}"
      if not hasattr(section, "keys"):
        problems.append((field, f"config {field}={_show(section)}: must be a section "
                                f"(enabled, {', '.join(r.path for r in rules)})"))
        continue
      problems += _apply(config, [Rule(f"{name}.enabled", _flag)], f"{phase}.")
      if section.get("enabled"):
        problems += _apply(config, rules, f"{field}.")
  return problems


def _epoch_problems(config) -> list[tuple[str, str]]:
  epochs = [_lookup(config, f"{phase}.epochs")[0] for phase in PHASES]
  if all(_is_int(e) and e >= 0 for e in epochs) and sum(epochs) < 1:
    shown = " + ".join(f"{p}.epochs={e}" for p, e in zip(PHASES, epochs))
    return [(f"{PHASES[-1]}.epochs", f"config {shown}: at least one epoch must train in all")]
  return []


def _weights_problems(config) -> list[tuple[str, str]]:
  """A from-scratch architecture (LeNet) has no pretrained file to load."""
  arch, weights = _lookup(config, "model.arch")[0], _lookup(config, "model.weights")[0]
  if arch not in _architectures() or weights is _MISSING or _weights(weights):
    return []
  if weights is None or str(weights).lower() in ("none", ""):
    return []
  from jaxmed.models.registry import ARCHITECTURES
  if ARCHITECTURES[arch].convert is None:
    return [("model.weights", f"config model.weights={_show(weights)}: must be None for "
                              f"model.arch={arch!r}, which has no pretrained weights")]
  return []


def _size_problems(config) -> list[tuple[str, str]]:
  """Networks with 'valid' stems (Xception, InceptionV3) or many halvings have a smallest input."""
  arch, size = _lookup(config, "model.arch")[0], _lookup(config, "data.image_size")[0]
  if arch not in _architectures() or not _is_int(size):
    return []
  from jaxmed.models.registry import ARCHITECTURES
  least = ARCHITECTURES[arch].min_size
  if size >= least:
    return []
  return [("data.image_size", f"config data.image_size={size}: model.arch={arch!r} needs at "
                              f"least {least} px; pass --config.data.image_size={least} or more")]


def _augment_problems(config) -> list[tuple[str, str]]:
  """Unknown option names (with did-you-mean) and the preset here; every other value through
  jaxmed.augment's own normalize, which the train step uses."""
  section, _ = _lookup(config, "augment")
  if section is _MISSING or not section:  # job.prepare_job: no augmentation
    return []
  if not hasattr(section, "keys"):
    return [("augment", f"config augment={_show(section)}: must be a section of Keras "
                        f"ImageDataGenerator options, e.g. {{'preset': 'mri'}}")]
  import dataclasses
  from jaxmed.augment import AugmentOptions, PRESETS, normalize
  from jaxmed.augment.transforms import _NOT_TRANSFORMS  # Keras options accepted with one value
  known = sorted({f.name for f in dataclasses.fields(AugmentOptions)} | set(_NOT_TRANSFORMS))
  problems = [(f"augment.{key}", f"config augment.{key}={_show(section[key])}: not an augment "
                                 f"option{_did_you_mean(key, known) or ' (see jaxmed/augment)'}")
              for key in section.keys() if key != "preset" and key not in known]
  # presets.resolve reads a falsy preset as 'none'.
  problems += _apply(config, [Rule("augment.preset", _choice(tuple(sorted(PRESETS)),
                                                             off=(None, "")))])
  if problems:
    return problems
  try:
    normalize(section)
  except (ValueError, TypeError) as e:
    message = " ".join(str(e).split())
    field = re.search(r"augment\.\w+", message)
    return [(field.group(0) if field else "augment", f"config {message}")]
  return []


def problems(config) -> list[tuple[str, str]]:
  """Every (field, one-line message) the config breaks, in the order of the rules."""
  if not hasattr(config, "keys"):
    return [("config", f"config {_show(config)}: must be a ConfigDict")]
  found = _apply(config, RULES) + _callback_problems(config) + _epoch_problems(config)
  return (found + _weights_problems(config) + _size_problems(config)
          + _augment_problems(config))


def check_config(config) -> None:
  """Raises UserError with one line: the first problem in full, then how many more and where."""
  found = problems(config)
  if not found:
    return
  message = found[0][1]
  if len(found) > 1:
    message += f" (and {len(found) - 1} more: {', '.join(field for field, _ in found[1:])})"
  raise UserError(message)
