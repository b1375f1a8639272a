"""Blood cell images (Kaggle "Blood Cell Images", BCCD-derived): EOSINOPHIL, LYMPHOCYTE, MONOCYTE,
NEUTROPHIL; 320x240 RGB, augmented copies in TRAIN.

  python -m jaxmed.train --config configs/blood_cells.py \
    --config.data.root=/data/blood-cells/dataset2-master/dataset2-master/images

Expected layout: ROOT/TRAIN/<class>/*.jpeg, ROOT/TEST/<class>/*.jpeg (TEST_SIMPLE is reported as
an extra split). Cells have no orientation: both flips and full rotations are safe. Results: none
measured (not available on the development machine).
"""

from jaxmed.configs import demo


def get_config():
  c = demo.get_config()
  c.data.root = "blood_cells"
  c.data.synthetic = False
  c.data.image_size = 128
  c.augment = {"rotation_range": 90.0, "horizontal_flip": True, "vertical_flip": True,
               "zoom_range": 0.1, "width_shift_range": 0.1, "height_shift_range": 0.1,
               "brightness_range": [0.9, 1.1]}
  c.frozen.epochs = 2
  c.finetune.epochs = 10
  c.finetune.learning_rate = 5e-4
  return c
