"""Sweep: which backbone for chest X-ray pneumonia? Same data, split and schedule for each.

  python -m jaxmed.sweep --config configs/sweep_chest_xray.py --workdir runs/sweep-chest \
    --config.data.root=/data/chest_xray --config.data.manifest=chest_split.jsonl

Backbones: torchvision MobileNetV2 and ResNet18/50 (ImageNet; ResNets need internet for their
weights), Keras MobileNet v1, and the from-scratch LeNet baseline. Results: not measured yet.
"""

import ml_collections

from jaxmed.configs import chest_xray


def get_config():
  c = chest_xray.get_config()
  c.sweep = ml_collections.ConfigDict(dict(archs=(
      "torchvision/mobilenet_v2", "torchvision/resnet18", "torchvision/resnet50", "mobilenet",
      "lenet")))
  return c
