"""Pediatric chest X-ray pneumonia (Kermany et al. 2018; Kaggle "chest-xray-pneumonia"):
NORMAL vs PNEUMONIA, imbalanced ~1:2.9.

  python -m jaxmed.train --config configs/chest_xray.py --config.data.root=/data/chest_xray

Expected layout: ROOT/train/{NORMAL,PNEUMONIA}/*.jpeg, optional ROOT/test/ and ROOT/val/ (the
Kaggle val/ holds 16 images: prefer --config.data.val_fraction with val/ removed, or a manifest).
Class weights 'balanced' counter the imbalance; the X-ray augmentation preset keeps anatomy upright.
Results: see the measured run recorded at the end of this docstring, when there is one.
"""

from configs import demo


def get_config():
  c = demo.get_config()
  c.data.root = "chest_xray"
  c.data.synthetic = False
  c.data.image_size = 128
  c.augment = {"preset": "xray"}
  c.train.class_weights = "balanced"
  c.train.checkpoint_metric = "val_macro_f1"
  c.frozen.epochs = 2
  c.finetune.epochs = 6
  c.finetune.learning_rate = 5e-4
  return c
