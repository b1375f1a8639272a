r"""Sweep: which backbone for chest X-ray pneumonia? MobileNetV2, EfficientNetB0, DenseNet121 and
ResNet50V2 (Keras Applications, ImageNet weights), each by 5-fold cross-validation with patients
kept whole, on the same folds and schedule:

  python -m jaxmed.sweep --config configs/sweep_chest_xray.py --workdir runs/sweep-chest \
    --config.data.root=/data/chest_xray

WORKDIR/comparison.md then lists each backbone's out-of-fold accuracy, macro-F1 and AUC with 95%
bootstrap intervals, its size and its speed (comparison.json beside it). ImageNet files are
fetched on first use (internet needed); `--config.sweep.weights=None` trains from scratch.

Results: not measured yet. This project's machines cannot download the Keras ImageNet files, and
from random init a short schedule says nothing: a trial on 2026-12-02 (3 folds, 64 px, 0 frozen + 1
fine-tuning epoch, `--config.sweep.weights=None`) left MobileNetV2 predicting the majority class on
fold 1 (val accuracy 0.743 = the PNEUMONIA share, macro-F1 0.426; train accuracy 0.636), its
BatchNorm moving averages (Keras' momentum 0.999) still near their initial values after 108 steps.
"""

import ml_collections

from jaxmed.configs import chest_xray


def get_config():
  c = chest_xray.get_config()
  c.sweep = ml_collections.ConfigDict(dict(
      archs=("mobilenet_v2", "efficientnet_b0", "densenet121", "resnet50v2"),
      folds=5,
      group_regex=r"(person\d+|IM-\d+)",  # the Kermany file names carry the patient id
      weights="imagenet"))
  return c
