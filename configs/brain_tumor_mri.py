"""Brain tumour MRI (Nickparvar, Kaggle "Brain Tumor MRI Dataset"): glioma, meningioma, notumor,
pituitary; 4 classes, ~5.7k train JPEGs, mixed grayscale/RGB.

  python -m jaxmed.train --config configs/brain_tumor_mri.py --config.data.root=/data/brain-tumor-mri

Expected layout: ROOT/Training/<class>/*.jpg and ROOT/Testing/<class>/*.jpg (or train/test). The
Kaggle archive holds byte-identical duplicates, also across Training and Testing: run
`python -m jaxmed.doctor ROOT` first; this config drops test images that also occur in train.

Measured 2026-11-22 on the Kaggle Training split only (../shared/data/brain_tumor_mri/Training,
5708 JPEGs; the Testing split was not available), remixed with exact duplicates dropped (207,
189 of them in notumor), a shortened schedule (2 frozen + 4 fine-tuning epochs) and 96 px:

  python -m jaxmed.split ../shared/data/brain_tumor_mri/Training --out bt_split.jsonl \
    --remix 0.8,0.1,0.1 --seed 0
  python -m jaxmed.train --config configs/brain_tumor_mri.py --workdir runs/bt \
    --config.data.root=../shared/data/brain_tumor_mri/Training \
    --config.data.manifest=bt_split.jsonl --config.data.image_size=96 \
    --config.frozen.epochs=2 --config.finetune.epochs=4

  split: train 4402, val 550, test 549 (about 133-144 per class)
  test (549 images, best checkpoint by val accuracy): accuracy 0.9271, macro-F1 0.9251;
    recall glioma 0.94, meningioma 0.78, notumor 0.99, pituitary 0.99
  time: 6 min 19 s total (compile 34 s, train 5 min 15 s, ~61 img/s fine-tuning) on the 2-core
    AMD EPYC CPU, jax 0.10.2, flax 0.12.8; val accuracy was still rising: the full schedule
    (3 + 12 epochs, 128 px) should do better, not measured.
"""

from jaxmed.configs import demo


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
