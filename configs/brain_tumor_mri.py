"""Brain tumour MRI (Nickparvar, Kaggle "Brain Tumor MRI Dataset"): glioma, meningioma, notumor,
pituitary; 4 classes, ~5.7k train JPEGs, mixed grayscale/RGB.

  python -m jaxmed.train --config configs/brain_tumor_mri.py --config.data.root=/data/brain-tumor-mri

Expected layout: ROOT/Training/<class>/*.jpg and ROOT/Testing/<class>/*.jpg (or train/test). The
Kaggle archive holds byte-identical duplicates, also across Training and Testing: run
`python -m jaxmed.doctor ROOT` first; this config drops test images that also occur in train.
Results: none measured yet with this config (no test split is available on the development
machine); run it and read summary.json.
"""

from configs import demo


def get_config():
  c = demo.get_config()
  c.data.root = "brain_tumor_mri"
  c.data.synthetic = False
  c.data.image_size = 128
  c.data.dedupe = "cross_split"
  c.augment.preset = "mri"
  c.frozen.epochs = 3
  c.finetune.epochs = 12
  c.finetune.learning_rate = 5e-4
  c.finetune.early_stopping.enabled = True
  c.finetune.early_stopping.monitor = "val_loss"
  return c
