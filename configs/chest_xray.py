r"""Pediatric chest X-ray pneumonia (Kermany et al. 2018; Kaggle "chest-xray-pneumonia"):
NORMAL vs PNEUMONIA, imbalanced ~1:2.9.

  python -m jaxmed.train --config configs/chest_xray.py --config.data.root=/data/chest_xray

Expected layout: ROOT/train/{NORMAL,PNEUMONIA}/*.jpeg, optional ROOT/test/ and ROOT/val/ (the
Kaggle val/ holds 16 images: prefer --config.data.val_fraction with val/ removed, or a manifest).
Class weights 'balanced' counter the imbalance; the X-ray augmentation preset keeps anatomy upright.

Measured 2026-11-22 on the Mendeley train split only (../shared/data/chest_xray_pneumonia/train,
5216 JPEGs; the official test split was not available), carved by patient so no child's images
span two splits (file names carry the id: personNNN / IM-NNNN), duplicates dropped:

  python -m jaxmed.split ../shared/data/chest_xray_pneumonia --out chest_split.jsonl \
    --remix 0.8,0.1,0.1 --seed 0 --group-regex '(person\d+|IM-\d+)'
  python -m jaxmed.train --config configs/chest_xray.py --workdir runs/chest \
    --config.data.root=../shared/data/chest_xray_pneumonia \
    --config.data.manifest=chest_split.jsonl --config.data.image_size=96

  split: train 4151 (NORMAL 1071 / PNEUMONIA 3080), val 520, test 519; 26 duplicates excluded
  torchvision/mobilenet_v2 ImageNet, 96 px, 2 frozen + 6 fine-tuning epochs, balanced weights
  test (519 images, best checkpoint by val macro-F1): accuracy 0.9865, macro-F1 0.9826,
    NORMAL recall 0.99 / precision 0.96, PNEUMONIA recall 0.98 / precision 1.00
  time: 18 min 58 s total (compile 79 s, train 15 min 57 s) on the 2-core AMD EPYC CPU, shared
    with other jobs (load average 4-6); jax 0.10.2, flax 0.12.8.
A patient-grouped split of one source is easier than Kermany's official test set (different
acquisition period); expect lower numbers there.

Cross-validated 2026-12-02 on the same train split (5 folds by patient, a quick setting: 64 px,
1 frozen + 1 fine-tuning epoch; defaults not yet chosen by CV, issue #18 item 4):

  python -m jaxmed.crossval --config configs/chest_xray.py --folds 5 --workdir runs/cv \
    --config.data.root=../shared/data/chest_xray_pneumonia --config.data.image_size=64 \
    --config.frozen.epochs=1 --config.finetune.epochs=1 --group-regex '(person\d+|IM-\d+)'

  out-of-fold (5216 images): accuracy 0.9325 [0.9256, 0.9394], macro-F1 0.9142 [0.9049, 0.9230]
    (bootstrap 95 %); fold val accuracy 0.920 / 0.935 / 0.953 / 0.927 / 0.928
  time: 4 min 30 s for the 5 folds on the 2-core Intel Xeon (shared with another job), jax 0.10.2
"""

from jaxmed.configs import demo


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
