"""Blood cell images (Kaggle "Blood Cell Images", BCCD-derived): EOSINOPHIL, LYMPHOCYTE, MONOCYTE,
NEUTROPHIL; 320x240 RGB, augmented copies in TRAIN.

  python -m jaxmed.train --config configs/blood_cells.py \
    --config.data.root=/data/blood-cells/dataset2-master/dataset2-master/images

Expected layout: ROOT/TRAIN/<class>/*.jpeg, ROOT/TEST/<class>/*.jpeg (TEST_SIMPLE is reported as
an extra split). Cells have no orientation: both flips and full rotations are safe.

TRAIN holds about 12,500 images made from about 400 originals (rotated, flipped, shifted), so a
validation split carved at random holds copies of training images: measured elsewhere
(2026-12-02, 64 px, 1 + 3 epochs, random carve) val accuracy 0.967 against 0.818 on TEST. So
validation is carved by copy cluster (`data.group_by = "copies"`, jaxmed/data/copies.py; the
doctor reports the clusters: `python -m jaxmed.doctor ROOT`); finding them reads TRAIN once more
and takes 2-3 minutes for 12,500 images on 2 cores (measured: 5,000 in 53 s, 20,000 in 233 s;
benchmarks/RESULTS.md, "Copy clusters").
Results with it: none measured (the data is not on the development machine), so its defaults
were not chosen by cross-validation as the chest X-ray and brain MRI configs' were; its
augmentation copies what the dataset's own copies hold (any turn, both flips).
"""

from jaxmed.configs import demo


def get_config():
  c = demo.get_config()
  c.data.root = "blood_cells"
  c.data.synthetic = False
  c.data.image_size = 128
  c.data.group_by = "copies"
  c.augment = {"rotation_range": 90.0, "horizontal_flip": True, "vertical_flip": True,
               "zoom_range": 0.1, "width_shift_range": 0.1, "height_shift_range": 0.1,
               "brightness_range": [0.9, 1.1]}
  c.frozen.epochs = 2
  c.finetune.epochs = 10
  c.finetune.learning_rate = 5e-4
  return c
