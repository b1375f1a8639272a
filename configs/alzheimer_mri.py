"""Alzheimer MRI (Kaggle "Alzheimer's Dataset (4 class of Images)"): MildDemented,
ModerateDemented, NonDemented, VeryMildDemented; strongly imbalanced (ModerateDemented has a few
dozen images), 176x208 grayscale slices.

  python -m jaxmed.train --config configs/alzheimer_mri.py --config.data.root=/data/alzheimer

Expected layout: ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg. Slices of one patient are
near-identical: split by patient with `python -m jaxmed.split ROOT --group-regex ...` when file
names carry a patient id, else validation is optimistic. Results: none measured (not available on
the development machine), so its defaults were not chosen by cross-validation as the chest X-ray
and brain MRI configs' were (there, no augmentation won; with a few dozen images in a class this
set may differ): compare both with `python -m jaxmed.crossval` (same seed, so the same folds)
before trusting either.
"""

from jaxmed.configs import demo


def get_config():
  c = demo.get_config()
  c.data.root = "alzheimer_mri"
  c.data.synthetic = False
  c.data.image_size = 128
  c.augment.preset = "mri"
  c.train.class_weights = "balanced"
  c.train.checkpoint_metric = "val_macro_f1"
  c.frozen.epochs = 3
  c.finetune.epochs = 15
  c.finetune.learning_rate = 5e-4
  return c
