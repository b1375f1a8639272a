r"""Sweep: which backbone for chest X-ray pneumonia? MobileNetV2, EfficientNetB0, DenseNet121 and
ResNet50V2 (Keras Applications, ImageNet weights), each by 5-fold cross-validation with patients
kept whole, on the same folds and schedule:

  python -m jaxmed.sweep --config configs/sweep_chest_xray.py --workdir runs/sweep-chest \
    --config.data.root=/data/chest_xray

WORKDIR/comparison.md then lists each backbone's out-of-fold accuracy, macro-F1 and AUC with 95%
bootstrap intervals, its size and its speed (comparison.json beside it). ImageNet files are
fetched on first use (internet needed); `--config.sweep.weights=None` trains from scratch.

Results. ImageNet: not measured (these machines cannot download the Keras ImageNet files for
these four). From random init, a shorter schedule that this 2-core CPU can run, measured
2026-12-03 (2-core AMD EPYC, Python 3.12.1, jax 0.12.0.1, flax 0.12.12; JSON in
benchmarks/results/sweep_chest_xray_random_init_py312_2026-12-03.json):

  python -m jaxmed.sweep --config configs/sweep_chest_xray.py --workdir runs/sweep-scratch \
    --config.data.root=../shared/data/chest_xray_pneumonia --config.sweep.weights=None \
    --config.sweep.folds=3 --config.data.image_size=64 --config.frozen.epochs=0 \
    --config.finetune.epochs=5 --config.finetune.learning_rate=1e-3

  (the shared train split, 5216 images, 3 folds by patient; out-of-fold over all 5216 with 95 %
  bootstrap intervals; ResNet50V2 was stopped after fold 1, its row is that fold's 1739 images)
  backbone          accuracy               macro-F1               AUC     train time
  MobileNetV2       0.743 [0.732, 0.755]   0.426 [0.422, 0.430]   0.500   249 s (3 folds)
  EfficientNetB0    0.743 [0.732, 0.755]   0.426 [0.422, 0.430]   0.500   524 s (3 folds)
  DenseNet121       0.980 [0.976, 0.984]   0.974 [0.968, 0.978]   0.997   1367 s (3 folds)
  ResNet50V2        0.970 (fold 1 only)    0.960 (fold 1 only)    0.995   1060 s (1 fold)

From scratch at this budget (540 steps) MobileNetV2 and EfficientNetB0 reach 0.98-0.99 training
accuracy but give one constant prediction at evaluation (the majority class, AUC 0.50, every
fold): their inference-mode BatchNorm (moving averages; Keras' momentum 0.999 in MobileNetV2,
0.99 in EfficientNet) does not match what the weights became. DenseNet121 and ResNet50V2 learn
the task from scratch. So this table says which architectures train from random init in five
epochs, not which ImageNet backbone transfers best; that needs the ImageNet run above. Time
(wall, processes included): 51 min for the first three backbones' 3 folds and 22 min for
ResNet50V2's first fold (15 img/s at 64 px), on 2 cores with tests running beside it at times.
Since then ResNet50V2's 64 px fine-tuning step runs about 3x faster (its last stage's 2x2 convs as
im2col, 08c1ba3; benchmarks/RESULTS.md "Convolutions on maps of at most 2x2"); the table above
is from before.
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
