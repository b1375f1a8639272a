"""Seconds-long config for subprocess tests: `data.root` must be overridden."""

from jaxmed.configs import demo


def get_config():
  c = demo.get_config()
  c.data.root = ""
  c.data.synthetic = False
  c.data.image_size = 32
  c.model.arch = "mobilenet_v2"
  c.model.alpha = 0.35
  c.model.weights = None
  c.model.head.hidden = (16,)
  c.train.batch_size = 8
  c.train.eval_batch_size = 16
  c.frozen.epochs = 1
  c.finetune.epochs = 2
  c.augment = {"preset": "none"}  # off: tests of the loop itself stay fast and well-conditioned
  return c
