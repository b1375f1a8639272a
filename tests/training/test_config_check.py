"""check_config: every shipped config passes, each kind of mistake is one line naming the field
and the bad value, and several mistakes are one line too."""

import pytest

from jaxmed.runtime import cli, config_files
from jaxmed.runtime.cli import UserError
from jaxmed.training.config_check import check_config, problems


def _demo():
  return config_files.load("demo")


def _set(config, path: str, value):
  """config[path] = value, also where the new value's type differs (ConfigDict is typed)."""
  *parents, key = path.split(".")
  node = config
  for part in parents:
    node = node[part]
  with node.ignore_type():
    node[key] = value
  return config


def _error(config) -> str:
  with pytest.raises(UserError) as info:
    check_config(config)
  message = str(info.value)
  assert "\n" not in message
  return message


@pytest.mark.parametrize("spec", config_files.shipped() + ["tpu:chest_xray", "multi_gpu:demo"])
def test_every_shipped_config_passes(spec):
  # sweep_chest_xray is chest_xray plus a `sweep` section, trained once per arch: it passes too.
  assert problems(config_files.load(spec)) == []
  check_config(config_files.load(spec))


def test_command_line_values_pass():
  # The shapes command-line overrides arrive in: 'None' strings, '3' for unfreeze, tuples.
  values = cli.parse_config_flags(
      ["--config", "demo", "--config.model.weights=None", "--config.finetune.unfreeze=3",
       "--config.data.dedupe=cross_split", "--config.train.class_weights=1,2.5,0,1",
       "--config.model.head.hidden=(64,32)", "--config.model.arch=lenet",
       "--config.frozen.epochs=0", "--config.finetune.epochs=1"], "test")
  check_config(values.config)


def test_optional_values_the_code_accepts_pass():
  c = _demo()
  for path, value in [("finetune.optimizer", "sgd"), ("finetune.schedule", "step"),
                      ("finetune.unfreeze", 2), ("finetune.batchnorm", "frozen"),
                      ("train.class_weights", "balanced"), ("train.class_weights", [1.0, 2.0]),
                      ("data.dedupe", "none"), ("model.head.hidden", ()),
                      ("train.checkpoint_every_steps", 0), ("augment", None),
                      ("augment", {"preset": "xray", "horizontal_flip": True, "rescale": 1})]:
    _set(c, path, value)
  # A disabled callback's fields are never read.
  _set(c, "finetune.early_stopping.monitor", "val_acc")
  check_config(c)


BAD = [  # (field, value, a piece of what the message must say)
    ("seed", -1, "integer >= 0"),
    ("seed", 1.5, "integer >= 0"),
    ("data.image_size", 8, "[16, 1024]"),
    ("data.val_fraction", 0.95, "[0, 0.9]"),
    ("data.input_path", "disk", "auto, resident, stream"),
    ("data.device_memory_budget_mb", 0.0, "> 0"),
    ("data.stream_threads", 0, "positive integer"),
    ("data.stream_workers", -1, ">= 0"),
    ("data.dedupe", "cross-split", "did you mean 'cross_split'"),
    ("model.arch", "mobilenetv2", "did you mean 'mobilenet_v2'"),
    ("model.arch", "resnet18", "did you mean 'torchvision/resnet18'"),
    ("model.dtype", "bf16", "float32, bfloat16"),
    ("model.alpha", 0.0, "> 0"),
    ("model.weights", "/nonexistent/weights.h5", "'imagenet', None or an existing weight file"),
    ("model.head.pooling", "average", "avg, max, flatten"),
    ("model.head.hidden", (128, 0), "positive integers"),
    ("model.head.dropout", 1.0, "[0, 1)"),
    ("train.batch_size", -3, "must be a positive integer"),
    ("train.eval_batch_size", 0, "positive integer"),
    ("train.label_smoothing", 1.0, "[0, 1)"),
    ("train.checkpoint_metric", "val_acc", "val_balanced_accuracy, val_auc (did you mean "
                                           "'val_accuracy'?)"),
    ("train.checkpoint_mode", "maximize", "min, max"),
    ("train.evaluate", "final", "best, last"),
    ("train.checkpoint_every_steps", -5, ">= 0"),
    ("train.class_weights", "1,-2", "non-negative weights"),
    ("train.class_weights", "heavy", "'balanced'"),
    ("train.focal_gamma", -1.0, ">= 0"),
    ("train.balanced_sampling", "yes", "True or False"),
    ("frozen.epochs", -1, ">= 0"),
    ("frozen.optimizer", "Adam", "did you mean 'adam'"),
    ("finetune.optimizer", "adma", "adam, adamax, adamw, sgd (did you mean 'adam'?)"),
    ("finetune.learning_rate", 0.0, "> 0"),
    ("finetune.schedule", "cosin", "did you mean 'cosine'"),
    ("finetune.warmup_epochs", -1, ">= 0"),
    ("finetune.weight_decay", -0.1, ">= 0"),
    ("finetune.unfreeze", "some", "'all'"),
    ("finetune.unfreeze", -2, "'all'"),
    ("finetune.batchnorm", "freeze", "did you mean 'frozen'"),
    ("finetune.backbone_lr_multiplier", -1.0, ">= 0"),
]


@pytest.mark.parametrize("field,value,says", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_a_bad_value_is_one_line_naming_field_and_value(field, value, says):
  message = _error(_set(_demo(), field, value))
  assert message.startswith(f"config {field}={value!r}: "), message
  assert says in message, message
  assert "more:" not in message, message


@pytest.mark.parametrize("callback,key,value,says", [
    ("reduce_on_plateau", "factor", 1.5, "(0, 1)"),
    ("reduce_on_plateau", "mode", "up", "min, max"),
    ("early_stopping", "monitor", "val_acc", "val_accuracy"),
    ("early_stopping", "patience", -1, ">= 0"),
])
def test_enabled_callbacks_are_checked(callback, key, value, says):
  c = _set(_set(_demo(), f"finetune.{callback}.{key}", value), f"finetune.{callback}.enabled", True)
  message = _error(c)
  assert message.startswith(f"config finetune.{callback}.{key}={value!r}: ") and says in message


def test_no_epochs_at_all():
  c = _set(_set(_demo(), "frozen.epochs", 0), "finetune.epochs", 0)
  assert "frozen.epochs=0 + finetune.epochs=0" in _error(c)


def test_pretrained_weights_for_a_from_scratch_arch():
  message = _error(_set(_demo(), "model.arch", "lenet"))
  assert message.startswith("config model.weights='imagenet': must be None") and "lenet" in message


@pytest.mark.parametrize("arch,least", [("inception_v3", 75), ("xception", 71),
                                        ("efficientnet_b0", 32)])
def test_input_smaller_than_the_architecture_accepts(arch, least):
  c = _set(_set(_demo(), "model.arch", arch), "data.image_size", least - 1)
  assert _error(c) == (f"config data.image_size={least - 1}: model.arch={arch!r} needs at least "
                       f"{least} px; pass --config.data.image_size={least} or more")
  assert not [p for p in problems(_set(c, "data.image_size", least)) if p[0] == "data.image_size"]


def test_missing_required_field_and_section():
  c = _demo()
  del c.train["batch_size"]
  assert _error(c) == "config train.batch_size is missing: must be a positive integer"
  c = _demo()
  del c["frozen"]
  assert _error(c).startswith("config frozen is missing: a required section")


@pytest.mark.parametrize("augment,field,says", [
    ({"rotaton_range": 10.0}, "augment.rotaton_range", "did you mean 'rotation_range'"),
    ({"preset": "mr"}, "augment.preset", "did you mean 'mri'"),
    ({"fill_mode": "mirror"}, "augment.fill_mode", "nearest"),
    ({"featurewise_center": True}, "augment.featurewise_center", "not supported"),
])
def test_augment_options(augment, field, says):
  message = _error(_set(_demo(), "augment", augment))
  assert message.startswith(f"config {field}") and says in message, message
  assert repr(next(iter(augment.values()))) in message


def test_several_problems_are_one_line():
  c = _demo()
  for field, value in [("train.batch_size", -3), ("finetune.optimizer", "adma"),
                       ("model.arch", "resnet5O")]:
    _set(c, field, value)
  message = _error(c)
  assert message.startswith("config model.arch='resnet5O': must be one of ")
  assert "did you mean 'resnet50'?" in message
  assert message.endswith("(and 2 more: train.batch_size, finetune.optimizer)")


def test_cli_prints_the_one_line(capsys):
  @cli.command
  def main(argv):
    check_config(_set(_demo(), "finetune.optimizer", "adma"))

  assert main([]) == 2
  assert capsys.readouterr().err == ("error: config finetune.optimizer='adma': must be one of "
                                     "adam, adamax, adamw, sgd (did you mean 'adam'?)\n")
